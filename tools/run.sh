#!/usr/bin/env bash
# tools/run.sh - builds weft (release) and runs its main job, printing what
# happened: for now the fiber runtime benchmark; the echo server driven by
# the bench tool once rpc/ lands.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
weft_ensure_deps
dir=build-release
[ -f "$dir/build.ninja" ] || meson setup "$dir" -Dbuildtype=release >/dev/null
ninja -C "$dir" >/dev/null
"$dir/bench/fiber_bench" "$@"
