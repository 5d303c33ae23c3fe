# tools/deps.sh - sourced by the other scripts: installs what building and
# testing weft needs on Debian 12 when it is missing (as root, or via sudo).

WEFT_DEB_PACKAGES="meson ninja-build pkg-config gcc clang libclang-rt-14-dev python3
  protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev libprotoc-dev
  libgoogle-perftools-dev zlib1g-dev"

weft_ensure_deps() {
    local missing=()
    local p
    for p in $WEFT_DEB_PACKAGES; do
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
