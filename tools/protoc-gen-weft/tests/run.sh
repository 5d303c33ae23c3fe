#!/usr/bin/env bash
# run.sh - runs protoc with protoc-gen-weft the way users do, and checks what
# check_names.c cannot: which files come out for which inputs, that every
# client stub is named after a caller protoc-c generated in the same run
# (so the names follow the installed protoc-c, not only the names spelled
# out in check_names.c), and that inputs the stubs cannot serve are refused
# with a message that says why.
#
#   run.sh PROTOC PROTOC_GEN_C PROTOC_GEN_WEFT TESTS_DIR
set -uo pipefail

protoc=$1 gen_c=$2 gen_weft=$3 dir=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# protoc_run OUT_DIR PROTO... : runs both plugins; stderr goes to OUT_DIR.err
protoc_run() {
    local out=$1
    shift
    mkdir -p "$out"
    "$protoc" --plugin=protoc-gen-c="$gen_c" --plugin=protoc-gen-weft="$gen_weft" \
        --proto_path="$dir" --c_out="$out" --weft_out="$out" "$@" 2>"$out.err"
}

# Which files come out: a pair per file, even without services; nothing
# for a file protoc-c writes nothing for.
check_outputs() {
    local out=$tmp/ok
    protoc_run "$out" mangle.proto mangle_types.proto c_package.proto no_package.proto \
        sub/dir/nested.proto no_generate.proto || { fail "protoc: $(cat "$out.err")"; return; }
    local base
    for base in mangle mangle_types c_package no_package sub/dir/nested; do
        [ -s "$out/$base.weft.h" ] || fail "$base.weft.h not written"
        [ -s "$out/$base.weft.c" ] || fail "$base.weft.c not written"
        grep -q "#include \"$base.pb-c.h\"" "$out/$base.weft.h" ||
            fail "$base.weft.h does not include $base.pb-c.h"
        grep -q "#include \"$base.weft.h\"" "$out/$base.weft.c" ||
            fail "$base.weft.c does not include $base.weft.h"
    done
    grep -q "defines no services" "$out/mangle_types.weft.h" ||
        fail "mangle_types.weft.h should say it has no services"
    ! ls "$out"/no_generate.* >/dev/null 2>&1 || fail "files written for no_generate.proto"
}

# Every <svc>__<m>_call stub must extend a caller protoc-c declared.
check_callers() {
    local out=$tmp/ok h stub n=0
    for h in $(cd "$out" && find . -name '*.weft.h'); do
        for stub in $(sed -n 's/^int \(.*\)_call($/\1/p' "$out/$h"); do
            n=$((n + 1))
            grep -q "^void $stub(ProtobufCService \*service," "$out/${h%.weft.h}.pb-c.h" ||
                fail "$h: ${stub}_call has no protoc-c caller $stub"
        done
    done
    [ "$n" -ge 9 ] || fail "found only $n client stubs"
}

# Each bad/*.proto says on its first line what protoc must fail with.
check_refusals() {
    local proto expect out
    for proto in "$dir"/bad/*.proto; do
        expect=$(sed -n '1s|^// expect: ||p' "$proto")
        out=$tmp/bad/$(basename "$proto" .proto)
        mkdir -p "$out"
        if "$protoc" --plugin=protoc-gen-weft="$gen_weft" --proto_path="$dir" \
            --weft_out="$out" "bad/$(basename "$proto")" 2>"$out.err"; then
            fail "$proto: accepted"
        elif ! grep -qF -- "$expect" "$out.err"; then
            fail "$proto: expected \"$expect\", got: $(cat "$out.err")"
        fi
    done
}

check_options_refused() {
    local out=$tmp/opt
    mkdir -p "$out"
    if "$protoc" --plugin=protoc-gen-weft="$gen_weft" --proto_path="$dir" \
        --weft_out=fast=1:"$out" no_package.proto 2>"$out.err"; then
        fail "an unknown option was accepted"
    else
        grep -qF "takes no options" "$out.err" || fail "option refused with: $(cat "$out.err")"
    fi
}

check_outputs
check_callers
check_refusals
check_options_refused
if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
