#!/usr/bin/env bash
# tools/test.sh - builds weft and runs every test, the one command CI runs.
#
# Four builds, each in its own directory under build-test/:
#   release    gcc, tcmalloc, every suite;
#   asan       clang, AddressSanitizer + UndefinedBehaviorSanitizer, every suite;
#   tsan       clang, ThreadSanitizer, the concurrency suites (fiber, net,
#              rpc);
#   aarch64    the fiber runtime alone (-Druntime_only=true) cross-built with
#              Debian's aarch64 gcc and run under qemu-user, so the other
#              architecture's context switch is tested too (skipped, saying
#              why, when the cross packages cannot be installed);
# the clang builds also run the libFuzzer targets for a bounded time.
# Sanitizer builds scale the stress loops down (-Dtest_scale) so the whole run
# stays well inside half an hour on two cores. The last line is
# "N passed, N failed", summed from each build's meson-logs/testlog.json; the
# exit status is non-zero if any test failed or any build broke.
set -uo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
weft_ensure_deps || exit 1

top=build-test
status=0
logs=()

run_build() {
    local name=$1 cc=$2 suites=$3; shift 3
    local dir=$top/$name
    echo "== $name build ($cc $*)"
    if [ ! -f "$dir/build.ninja" ]; then
        CC=$cc meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
            { mkdir -p "$top"; cat "$dir.setup.log"; status=1; return; }
    fi
    ninja -C "$dir" >"$dir.build.log" 2>&1 || { tail -50 "$dir.build.log"; status=1; return; }
    local args=()
    for s in $suites; do args+=(--suite "$s"); done
    # One test at a time: on two cores, a neighbour's load would blur the
    # timing the tests check.
    meson test -C "$dir" --print-errorlogs --num-processes 1 "${args[@]}" || status=1
    logs+=("$dir/meson-logs/testlog.json")
}

mkdir -p "$top"
run_build release gcc "" -Dbuildtype=release
run_build asan clang "" -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
    -Db_lundef=false -Dtcmalloc=disabled -Dtest_scale=20
run_build tsan clang "fiber net rpc" -Dbuildtype=debugoptimized -Db_sanitize=thread \
    -Db_lundef=false -Dtcmalloc=disabled -Dtest_scale=10
if weft_ensure_deps "$WEFT_CROSS_DEB_PACKAGES"; then
    run_build aarch64 gcc "" --cross-file tools/cross/aarch64-linux-gnu.ini \
        -Druntime_only=true -Dbuildtype=debugoptimized -Dtcmalloc=disabled -Dtest_scale=10
else
    echo "== aarch64 build skipped: cannot install $WEFT_CROSS_DEB_PACKAGES"
fi

/usr/bin/python3 - "${logs[@]}" <<'PY' || status=1
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        failed += 1
        continue
    for line in lines:
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
if skipped:
    print(f"{skipped} skipped")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
exit $status
