#!/usr/bin/env bash
# tools/run.sh - builds weft (release) and runs its main job: starts the
# example echo server, loads it with weft-bench for a few seconds, prints
# the result, and stops the server. Arguments go to weft-bench (e.g.
# --concurrency 16 --payload-size 4096 --duration 10).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
weft_ensure_deps
dir=build-release
[ -f "$dir/build.ninja" ] || meson setup "$dir" -Dbuildtype=release >/dev/null
ninja -C "$dir" >/dev/null

server_log=$(mktemp)
"$dir/examples/echo/echo_server" --address 127.0.0.1:0 >"$server_log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$server_log"' EXIT
for _ in $(seq 100); do
    grep -q "serving on" "$server_log" && break
    sleep 0.05
done
address=$(sed -n 's/^echo_server: serving on //p' "$server_log")
[ -n "$address" ] || { cat "$server_log"; echo "run.sh: the echo server did not start" >&2; exit 1; }
echo "echo_server on $address; weft-bench --method example.EchoService.Echo $*"
"$dir/bench/weft-bench" --server "$address" --method example.EchoService.Echo \
    --input '{"message":"hello from weft-bench"}' --duration 5 --warmup 1 --quiet "$@"
