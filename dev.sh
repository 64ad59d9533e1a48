#!/usr/bin/env bash
# The one entry point on a fresh Debian/Ubuntu machine with Python >= 3.11:
#   bash dev.sh demo   install everything, then run the embedded demo cluster
#   bash dev.sh test   install everything, then run the whole test suite
# System packages come from contrib/apt-packages.txt (apt-get, as root or through sudo),
# Python packages into ./.venv from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

install_system_packages() {
    local wanted=() missing=() sudo=""
    mapfile -t wanted < <(sed -e 's/#.*//' -e '/^\s*$/d' contrib/apt-packages.txt)
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    # Services from these packages are only used by tests and benchmarks, which start their own.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_python_packages() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
}

case "${1:-}" in
    demo)
        install_system_packages
        install_python_packages
        shift
        exec "$VENV/bin/clusterkit" demo "$@"
        ;;
    test)
        install_system_packages
        install_python_packages
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    setup)
        install_system_packages
        install_python_packages
        ;;
    *)
        echo "usage: bash dev.sh demo|test|setup [args...]" >&2
        exit 2
        ;;
esac
