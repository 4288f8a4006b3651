#!/usr/bin/env bash
# Debian's QGIS 3.22 (with Python 3.11 at /usr/bin/python3), Xvfb, and the plugin test environment.
# Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v qgis_process.bin >/dev/null || need+=(qgis python3-qgis)
command -v xvfb-run >/dev/null || need+=(xvfb xauth)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "QGIS is missing: run 'sudo apt-get install -y --no-install-recommends qgis python3-qgis xvfb xauth'" >&2
    exit 1
  fi
  echo "installing ${need[*]} from Debian (about a minute)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
venv=.venv-qgis
stamp="$venv/.installed-$(md5sum tests/plugin/requirements.txt | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  test -x "$venv/bin/python" || /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install -q -r tests/plugin/requirements.txt
  rm -f "$venv"/.installed-* && touch "$stamp"
fi
