#!/usr/bin/env bash
# docs/screenshots/learn_and_predict.png: the main dialog in desktop QGIS under Xvfb, with the
# demo layers filled in. Needs qgis, xvfb-run, and resources/demo/manhattan.gpkg.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d -t topt-screenshot.XXXXXX)
trap 'rm -rf "$work"' EXIT
plugin="$work/profile/profiles/default/python/plugins/topt_qgis"
mkdir -p "$plugin"
for item in "$root"/topt_qgis/*; do
  case $(basename "$item") in __pycache__|metadata.txt|resources) ;; *) ln -s "$item" "$plugin/" ;; esac
done
ln -s "$root/metadata.txt" "$plugin/metadata.txt"
ln -s "$root/resources" "$plugin/resources"
cp "$root/resources/demo/manhattan.gpkg" "$work/manhattan.gpkg"
export QGIS_CUSTOM_CONFIG_PATH="$work/profile" TOPT_DEMO="$work/manhattan.gpkg"
export TOPT_SCREENSHOT="$root/docs/screenshots/learn_and_predict.png"
export TOPT_ENGINE_PYTHON=${TOPT_ENGINE_PYTHON:-$root/.venv/bin/python}
QT_QPA_PLATFORM=offscreen qgis_process.bin plugins enable topt_qgis >/dev/null
timeout 120 xvfb-run -a -s "-screen 0 1600x1200x24" \
  qgis --noversioncheck --nologo --code "$root/docs/screenshots/take_learn_and_predict.py" \
  >"$work/qgis.log" 2>&1 || { tail -20 "$work/qgis.log"; }
test -s "$TOPT_SCREENSHOT" && echo "wrote $TOPT_SCREENSHOT"
