#!/usr/bin/env bash
# bench/grpc/build.sh - builds the gRPC C++ peer of bench/compare:
# grpc_echo_server and grpc_echo_client, into BUILD_DIR (default:
# build-cmp-grpc at the top of the tree; never committed).
#
#   bench/grpc/build.sh [BUILD_DIR]
#
# Needs Debian's libgrpc++-dev and protobuf-compiler-grpc (and pkg-config,
# g++, protoc): installs what is missing with apt-get when run as root, and
# otherwise fails with a message saying what to install. Generates the code
# with protoc + grpc_cpp_plugin and compiles with g++ -O2. Like weft's bench
# programs, the two are linked with tcmalloc (libtcmalloc_minimal) when it is
# there, so every peer runs on the same allocator. Does nothing when the
# binaries are newer than their sources. Exit status 0 when both binaries
# are ready; otherwise 1 and the reason on stderr.
set -uo pipefail

src=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$src/../.." && pwd)
out=${1:-$root/build-cmp-grpc}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)

say() { echo "bench/grpc/build.sh: $*" >&2; }

packages="libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev pkg-config g++"
missing=()
for p in $packages; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing ${missing[*]}; not root, so not installing them (apt-get install ${missing[*]})"
        exit 1
    fi
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${missing[@]}" >"$out/apt.log" 2>&1; then
        apt-get update -q >>"$out/apt.log" 2>&1
        if ! apt-get install -y -q "${missing[@]}" >>"$out/apt.log" 2>&1; then
            say "apt-get install ${missing[*]} failed (see $out/apt.log)"
            exit 1
        fi
    fi
fi

plugin=$(command -v grpc_cpp_plugin) || { say "grpc_cpp_plugin not found"; exit 1; }
pkg-config --exists grpc++ protobuf || { say "pkg-config does not know grpc++ / protobuf"; exit 1; }

# Up to date?
newest_src=$(ls -t "$src/echo.proto" "$src/grpc_echo_server.cc" "$src/grpc_echo_client.cc" \
    "$src/build.sh" | head -n1)
if [ -x "$out/grpc_echo_server" ] && [ -x "$out/grpc_echo_client" ] &&
    [ "$out/grpc_echo_server" -nt "$newest_src" ] && [ "$out/grpc_echo_client" -nt "$newest_src" ]; then
    exit 0
fi

# One build at a time in a directory.
exec 9>"$out/.lock"
flock 9

protoc -I "$src" --cpp_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" \
    "$src/echo.proto" || { say "protoc failed"; exit 1; }

read -r -a cflags <<<"$(pkg-config --cflags grpc++ protobuf)"
read -r -a libs <<<"$(pkg-config --libs grpc++ protobuf)"
if pkg-config --exists libtcmalloc_minimal; then
    read -r -a tc <<<"$(pkg-config --libs libtcmalloc_minimal)"
    libs+=("${tc[@]}")
fi
cxx=(g++ -std=c++17 -O2 -g -DNDEBUG -pthread -I"$out" "${cflags[@]}")

pids=()
"${cxx[@]}" -c "$out/echo.pb.cc" -o "$out/echo.pb.o" & pids+=($!)
"${cxx[@]}" -c "$out/echo.grpc.pb.cc" -o "$out/echo.grpc.pb.o" & pids+=($!)
for p in "${pids[@]}"; do wait "$p" || { say "compiling the generated code failed"; exit 1; }; done
pids=()
for prog in grpc_echo_server grpc_echo_client; do
    "${cxx[@]}" "$src/$prog.cc" "$out/echo.pb.o" "$out/echo.grpc.pb.o" -o "$out/$prog.tmp" \
        "${libs[@]}" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { say "compiling the gRPC echo programs failed"; exit 1; }; done
for prog in grpc_echo_server grpc_echo_client; do
    mv -f "$out/$prog.tmp" "$out/$prog" || exit 1
done
say "built $out/grpc_echo_server and $out/grpc_echo_client"
