# tools/deps.sh - sourced by the other scripts: installs what building and
# testing weft needs on Debian 12 when it is missing (as root, or via sudo).

WEFT_DEB_PACKAGES="meson ninja-build pkg-config gcc clang libclang-rt-14-dev python3
  protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev libprotoc-dev
  libgoogle-perftools-dev zlib1g-dev"

# For the aarch64 stage of tools/test.sh: the fiber runtime cross-built and
# run under qemu-user.
WEFT_CROSS_DEB_PACKAGES="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"

# weft_ensure_deps [packages]: the build's packages by default.
weft_ensure_deps() {
    local missing=()
    local p
    for p in ${1:-$WEFT_DEB_PACKAGES}; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "weft: need root to install: ${missing[*]}" >&2; return 1; }
        sudo=(sudo)
    fi
    echo "weft: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null ||
        { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null; }
}
