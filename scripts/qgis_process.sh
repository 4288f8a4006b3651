#!/usr/bin/env bash
# QGIS's headless Processing runner with this checkout's plugin enabled in a fresh profile.
# Debian 12's /usr/bin/qgis_process wrapper is broken: this calls qgis_process.bin offscreen.
# Usage: scripts/qgis_process.sh run topt:learn_and_predict -- NAME=VALUE ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=$(mktemp -d -t topt-qgis-profile.XXXXXX)
trap 'rm -rf "$profile"' EXIT
plugins="$profile/profiles/default/python/plugins"
mkdir -p "$plugins"
ln -s "$root/topt_qgis" "$plugins/topt_qgis"
export QGIS_CUSTOM_CONFIG_PATH="$profile" QT_QPA_PLATFORM=offscreen
export TOPT_ENGINE_PYTHON=${TOPT_ENGINE_PYTHON:-$root/.venv/bin/python}
qgis_process.bin plugins enable topt_qgis >/dev/null 2>&1 \
  || { echo "qgis_process: the topt_qgis plugin did not load" >&2; qgis_process.bin plugins enable topt_qgis >&2; exit 1; }
exec qgis_process.bin "$@"
