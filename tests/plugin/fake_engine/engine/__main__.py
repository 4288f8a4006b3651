"""Fake `python -m engine`: the engine's CLI and JSON-lines events, with no machine learning.

Reads the job like the real engine, writes regions.gpkg (id, geometry, emb_*, pred_*, fold_*,
ext_*, lo_*, hi_*) with values computed from the region id, in shuffled row order, so tests can
check the mapping: emb_00i = 10 * id + i, pred_<target> = 2 * id + 0.5, fold_<target> = id % 3,
ext_<target> = 1 where id % 5 == 0, else 0, lo_<target> / hi_<target> = pred -/+ 1 (NULL where
id % 7 == 0: a region without an interval).
FAKE_ENGINE_MODE picks a behaviour: ok, sleep, ignore_term, crash, input_error, malformed,
stderr_flood. FAKE_ENGINE_RECORD names a JSON file that receives argv, cwd, env and pid.
Runs with the system Python (GDAL's osgeo bindings), never inside QGIS.
"""

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

VERSION = 1
START = time.monotonic()
MODE = os.environ.get("FAKE_ENGINE_MODE", "ok")


def emit(event, **fields):
    record = {"event": event, "v": VERSION, "time": round(time.monotonic() - START, 3), **fields}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def garbage(text):
    if MODE == "malformed":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def record(args):
    path = os.environ.get("FAKE_ENGINE_RECORD")
    if path:
        Path(path).write_text(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(),
                                          "env": dict(os.environ), "command": args.command}))


def open_layer(entry):
    from osgeo import ogr

    source = ogr.Open(entry["path"])
    layer = source.GetLayerByName(entry["layer"]) if entry.get("layer") else source.GetLayer(0)
    return source, layer


def numeric_id(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float(len(str(value)))


def write_regions(job, out_dir, targets, width):
    from osgeo import ogr

    source, layer = open_layer(job["regions"])
    id_field = job["regions"].get("id_field") or "region_id"
    rows = []
    for feature in layer:
        rows.append((feature.GetField(id_field), feature.GetGeometryRef().Clone()))
    random.Random(7).shuffle(rows)  # the plugin must match by id, never by order
    driver = ogr.GetDriverByName("GPKG")
    path = out_dir / "regions.gpkg"
    data = driver.CreateDataSource(str(path))
    out = data.CreateLayer("regions", layer.GetSpatialRef(), ogr.wkbMultiPolygon)
    defn = layer.GetLayerDefn()
    id_type = defn.GetFieldDefn(defn.GetFieldIndex(id_field)).GetType()
    out.CreateField(ogr.FieldDefn(id_field, id_type))
    for i in range(width):
        out.CreateField(ogr.FieldDefn(f"emb_{i:03d}", ogr.OFTReal))
    for target in targets:
        out.CreateField(ogr.FieldDefn(f"pred_{target}", ogr.OFTReal))
        out.CreateField(ogr.FieldDefn(f"fold_{target}", ogr.OFTInteger))
        out.CreateField(ogr.FieldDefn(f"ext_{target}", ogr.OFTInteger))
        out.CreateField(ogr.FieldDefn(f"lo_{target}", ogr.OFTReal))
        out.CreateField(ogr.FieldDefn(f"hi_{target}", ogr.OFTReal))
    out.StartTransaction()
    for region_id, geometry in rows:
        feature = ogr.Feature(out.GetLayerDefn())
        feature.SetField(id_field, region_id)
        value = numeric_id(region_id)
        for i in range(width):
            feature.SetField(f"emb_{i:03d}", 10 * value + i)
        for target in targets:
            feature.SetField(f"pred_{target}", 2 * value + 0.5)
            feature.SetField(f"fold_{target}", int(value) % 3)
            feature.SetField(f"ext_{target}", int(int(value) % 5 == 0))
            if int(value) % 7:
                feature.SetField(f"lo_{target}", 2 * value - 0.5)
                feature.SetField(f"hi_{target}", 2 * value + 1.5)
        feature.SetGeometry(ogr.ForceToMultiPolygon(geometry))
        out.CreateFeature(feature)
    out.CommitTransaction()
    data = None
    return path, len(rows)


def main():
    parser = argparse.ArgumentParser(prog="python -m engine")
    parser.add_argument("command")
    parser.add_argument("--job")
    parser.add_argument("--model")
    parser.add_argument("--events", default="text")
    parser.add_argument("--out-dir")
    args, _ = parser.parse_known_args()
    record(args)
    job = json.loads(Path(args.job).read_text()) if args.job else {}
    emit("start", command=args.command, engine_version="0.0-fake", device="cpu")
    garbage("this is not an event")
    if args.command == "check":
        emit("result", outputs={}, metrics={
            "python": sys.executable, "python_version": sys.version.split()[0],
            "engine_version": "0.0-fake", "device": "cpu", "gpu": None,
            "versions": {"torch": None}, "default_model_available": True},
            summary="fake engine, device cpu")
        return 0
    if MODE == "input_error":
        emit("error", kind="input", message="layer 'regions', field 'crime': only 3 regions have "
             "a value", layer="regions", field="crime", hint="Choose a target with more values.")
        return 2
    emit("progress", stage="data", fraction=0.1, message="reading layers")
    garbage('{"event": "progress", "v": 1, "time": 0.1, "stage": "data", "fraction": 7}')
    garbage('{"event": "progr')
    garbage("[1, 2, 3]")
    if MODE in ("sleep", "ignore_term"):
        if MODE == "ignore_term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            def stop(signum, frame):
                emit("error", kind="cancelled", message="the run was cancelled; nothing was "
                     "written", layer=None, field=None, hint=None)
                sys.exit(130)
            signal.signal(signal.SIGTERM, stop)
        for _ in range(600):
            time.sleep(0.1)
        return 0
    if MODE == "crash":
        sys.stderr.write("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                         "RuntimeError: segmentation fault in fake kernel\n")
        sys.stderr.flush()
        os._exit(1)
    if MODE == "stderr_flood":
        for i in range(40000):
            sys.stderr.write(f"noise line {i} " + "x" * 40 + "\n")
    emit("log", level="info", message="fake SREL done")
    emit("log", level="warning", message="fake warning")
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "prepare":
        source, layer = open_layer(job["regions"])
        summary = {"n_regions": layer.GetFeatureCount(), "views": {"poi": 3}}
        (out_dir / "dataset.json").write_text(json.dumps(summary))
        emit("result", outputs={"dataset": str(out_dir / "dataset.json")}, metrics=summary,
             summary=f"{summary['n_regions']} regions")
        return 0
    width = int(job.get("embedding_size") or 144)
    if args.command == "predict":
        model = json.loads((Path(args.model) / "config.json").read_text())
        targets, width = model["targets"], model["embedding_size"]
    else:
        targets = job.get("targets") or []
    regions, count = write_regions(job, out_dir, targets, width)
    outputs = {"regions": str(regions)}
    if args.command in ("train", "embed"):
        model_dir = out_dir / "model"
        model_dir.mkdir(exist_ok=True)
        (model_dir / "config.json").write_text(json.dumps({"targets": targets,
                                                           "embedding_size": width}))
        (out_dir / "metrics.json").write_text(json.dumps({t: {"r2": 0.5} for t in targets}))
        (out_dir / "report.html").write_text("<html><body>fake report</body></html>")
        outputs.update(model=str(model_dir), metrics=str(out_dir / "metrics.json"),
                       report=str(out_dir / "report.html"))
    emit("progress", stage="write", fraction=1.0, message="done")
    emit("result", outputs=outputs, metrics={"regions": count}, summary=f"{count} regions done")
    return 0


sys.exit(main())
