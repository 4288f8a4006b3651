"""Write-back timing in QGIS: 144 embedding fields into 10,000 region features.

Run with QGIS's Python, headless:

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python bench/writeback_qgis.py --out docs/bench

For each format (GeoPackage, Shapefile) it writes a grid of N square regions with a `region_id`
field, and a result layer (GeoPackage, as the engine writes it) with `region_id` and emb_000..
emb_143 (and a pred_ field), then times `topt_qgis.writeback.write_fields_into_layer` (fields
added in place) and `write_output_layer` (a new layer). Writes writeback-qgis.json.
Standard library and qgis only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _grid_layer(path: str, n: int, driver: str, context):
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsFeature,
        QgsField,
        QgsFields,
        QgsGeometry,
        QgsRectangle,
        QgsVectorFileWriter,
        QgsVectorLayer,
        QgsWkbTypes,
    )
    from qgis.PyQt.QtCore import QVariant

    fields = QgsFields()
    fields.append(QgsField("region_id", QVariant.Int))
    fields.append(QgsField("name", QVariant.String, len=20))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    writer = QgsVectorFileWriter.create(path, fields, QgsWkbTypes.Polygon,
                                        QgsCoordinateReferenceSystem("EPSG:32618"), context,
                                        options)
    side = int(n**0.5 + 0.999)
    for i in range(n):
        feature = QgsFeature(fields)
        x, y = (i % side) * 300.0, (i // side) * 300.0
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y, x + 300.0, y + 300.0)))
        feature.setAttributes([i, f"region {i}"])
        writer.addFeature(feature)
    del writer
    return QgsVectorLayer(path, Path(path).stem, "ogr")


def _result_layer(path: str, n: int, width: int, context):
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsFeature,
        QgsField,
        QgsFields,
        QgsVectorFileWriter,
        QgsVectorLayer,
        QgsWkbTypes,
    )
    from qgis.PyQt.QtCore import QVariant

    fields = QgsFields()
    fields.append(QgsField("region_id", QVariant.Int))
    for k in range(width):
        fields.append(QgsField(f"emb_{k:03d}", QVariant.Double))
    fields.append(QgsField("pred_crime", QVariant.Double))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    writer = QgsVectorFileWriter.create(path, fields, QgsWkbTypes.NoGeometry,
                                        QgsCoordinateReferenceSystem("EPSG:32618"), context,
                                        options)
    rng = random.Random(0)  # noqa: S311 - test data, not security
    order = list(range(n))
    rng.shuffle(order)  # matched by id, not by order
    for i in order:
        feature = QgsFeature(fields)
        feature.setAttributes([i] + [rng.gauss(0, 1) for _ in range(width)] + [rng.random()])
        writer.addFeature(feature)
    del writer
    return QgsVectorLayer(path, "regions", "ogr")


def run(n: int, width: int, out: Path) -> dict:
    from qgis.core import Qgis, QgsApplication, QgsCoordinateTransformContext

    app = QgsApplication([], False)
    app.initQgis()
    try:
        from topt_qgis import writeback
    except ImportError as error:
        return {"skipped": f"topt_qgis.writeback is not importable: {error}"}
    context = QgsCoordinateTransformContext()
    results: dict = {"regions": n, "fields": width + 1, "qgis": Qgis.QGIS_VERSION,
                     "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = _result_layer(os.path.join(tmp, "result.gpkg"), n, width, context)
        results["make_result_seconds"] = time.perf_counter() - start
        for label, driver, ext in (("GeoPackage", "GPKG", "gpkg"),
                                   ("Shapefile", "ESRI Shapefile", "shp")):
            layer = _grid_layer(os.path.join(tmp, f"regions.{ext}"), n, driver, context)
            start = time.perf_counter()
            report = writeback.write_fields_into_layer(layer, "region_id", result, "region_id")
            in_place = time.perf_counter() - start
            filled = sum(1 for f in layer.getFeatures()
                         if f["emb_143"] is not None and f["emb_143"] == f["emb_143"]
                         and str(f["emb_143"]) != "NULL")  # features whose last field is set
            fields_after = len(layer.fields())
            start = time.perf_counter()
            writeback.write_output_layer(layer, "region_id", result, "region_id",
                                         os.path.join(tmp, f"joined.{ext}"), context)
            new_layer = time.perf_counter() - start
            results["formats"][label] = {
                "in_place_seconds": in_place, "matched": report.matched,
                "renamed": len(report.renamed()), "features_filled": filled,
                "fields_after": fields_after, "new_layer_seconds": new_layer}
            print(f"{label}: in place {in_place:.2f} s, new layer {new_layer:.2f} s",
                  file=sys.stderr)
    results["_app"] = app  # kept alive until the JSON is written (exitQgis can crash headless)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=144, help="embedding fields")
    parser.add_argument("--out", default=str(REPO / "docs" / "bench"))
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from bench.env import environment

    measured = run(args.regions, args.width, Path(args.out))
    measured.pop("_app", None)
    result = {"environment": environment("cpu"), **measured}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "writeback-qgis.json").write_text(json.dumps(result, indent=1))
    sys.stdout.flush()
    os._exit(0)  # skip QGIS's teardown, which can crash without a display


if __name__ == "__main__":
    sys.exit(main())
