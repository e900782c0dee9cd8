#!/usr/bin/env bash
# Fresh-machine setup: system libraries, then a virtual environment in .venv with STAC installed.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/jpeglib.h ] || need+=(libjpeg62-turbo-dev)
[ -f /usr/include/x264.h ] || need+=(libx264-dev)
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
# ip and tc: stac-bench link's kernel-shaped link (network namespaces) and its tests
{ command -v ip && command -v tc; } >/dev/null || need+=(iproute2)
# haproxy: the edge's proxy in front of several servers (stac-edge serve --proxy, stac-edge proxy) and its tests
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing system packages: ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: need root (or sudo) to install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# the evaluation clips from Debian's opencv-doc (stac.video.DEBIAN_SAMPLES): apt-get needs current lists
fetch='from stac.video import fetch_debian_samples as f; f()'
if ! .venv/bin/python -c "$fetch" 2>/dev/null; then
    [ "$(id -u)" -eq 0 ] && apt-get update -qq
    .venv/bin/python -c "$fetch"
fi
echo "STAC installed in .venv"
