#!/usr/bin/env bash
# The main job the way a user gets it: the bundled Manhattan demo through QGIS (headless
# qgis_process.bin, the ToPT Processing provider), fields written to a copy of the demo layer,
# then the metric table beside the published numbers.
# Usage: scripts/demo.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-out/demo}")
mkdir -p "$out"
demo=resources/demo/manhattan.gpkg
[ -f "$demo" ] || .venv/bin/python resources/demo/build_demo.py
cp "$demo" "$out/manhattan.gpkg"   # the user's copy: the bundled file is never touched
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
start=$(date +%s)
# KMeans(12) as the published clustering figures use (the demo's land use has 13 classes, one of
# them a single region), so the clustering line compares like with like.
if [ -f topt_qgis/provider.py ] && command -v qgis_process.bin >/dev/null; then
  echo "running topt:learn_and_predict through QGIS (qgis_process.bin, offscreen)"
  bash scripts/qgis_process.sh run topt:learn_and_predict -- \
    REGIONS="$out/manhattan.gpkg|layername=regions" ID_FIELD=region_id \
    POINTS="$out/manhattan.gpkg|layername=pois" POINT_CATEGORY_FIELD=category \
    LANDUSE="$out/manhattan.gpkg|layername=landuse" LANDUSE_CLASS_FIELD=class \
    TRIPS="$out/manhattan.gpkg|layername=trips" TRIP_ORIGIN_FIELD=origin \
    TRIP_DESTINATION_FIELD=destination TRIP_WEIGHT_FIELD=trips \
    TARGETS=crime TARGETS=check_in TARGETS=service_call CLASS_FIELD=landuse_class CLUSTERS=12 \
    FOLDS=10 SHUFFLE=false \
    OUTPUT="$out/manhattan_topt.gpkg" MODEL_OUTPUT="$out/model" REPORT="$out/report.html"
  metrics="$out/model/metrics.json"
else
  echo "the QGIS plugin or QGIS is not there: running the engine's command line instead"
  .venv/bin/python -m engine train --regions "$out/manhattan.gpkg|layername=regions" \
    --id-field region_id --points "$out/manhattan.gpkg|layername=pois|category=category" \
    --landuse "$out/manhattan.gpkg|layername=landuse|class=class" \
    --trips "$out/manhattan.gpkg|layername=trips|origin=origin|destination=destination|weight=trips" \
    --targets crime,check_in,service_call --classes landuse_class --clusters 12 --folds 10 --no-shuffle \
    --out-dir "$out/engine" --overwrite
  metrics="$out/engine/metrics.json"
fi
echo "finished in $(( $(date +%s) - start )) s"
.venv/bin/python scripts/demo_table.py "$metrics"
