#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: the system libraries that napari's
# Qt viewer needs to run headless under Xvfb (see the napari CI notes) and ceimap with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
      libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
      libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "installing system packages: ${missing[*]}" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "warning: apt-get not found; install these system packages yourself: ${missing[*]}" >&2
    fi
fi

python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet -e ".[test]"

# MANTiS's file readers check that the NXstxm and .ncb files ceimap writes open in MANTiS. Its GUI
# dependencies (PyQt5, pyqtgraph) are left out on purpose: they would clash with napari's PyQt6, and the
# readers need only numpy, scipy and h5py.
python3 -m pip install --quiet --no-deps "mantis-xray==3.3.0"
