"""`predict --model DIR`: a trained model applied to regions described by the same layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.events import EventSink
from engine.outputs import (
    HIGH_PREFIX,
    LOW_PREFIX,
    output_id_field,
    region_table,
    staged_output,
    write_regions,
)


def _check_manifest(model_dir: Path, dataset) -> dict:
    path = model_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"no readable model manifest in {model_dir} ({exc})",
                         layer=str(model_dir),
                         hint="Pass the model/ folder written by `train`.") from exc
    if manifest.get("format") != "topt-model":
        raise InputError(f"{path} is not a ToPT model", layer=str(model_dir),
                         hint="Pass the model/ folder written by `train`.")
    trained = manifest.get("views", {})
    if set(trained) != set(dataset.views):
        raise InputError(
            f"the model was trained on the views {', '.join(sorted(trained))} but these regions "
            f"have {', '.join(sorted(dataset.views)) or 'none'}", layer=str(model_dir),
            hint="Give the same kinds of data layers as at training.")
    for name, spec in trained.items():
        view = dataset.views[name]
        if spec["columns"] is not None and list(map(str, view.columns)) != spec["columns"]:
            raise InputError(
                f"the {name} view has other columns than at training "
                f"({len(view.columns)} here, {len(spec['columns'])} in the model)",
                layer=str(model_dir),
                hint="Use the same category, class and numeric fields as at training.")
    return manifest


def _half_widths(target: str, interval: dict, predictions: np.ndarray,
                 fields: dict[str, np.ndarray], sink: EventSink) -> np.ndarray | None:
    """Half-widths of `target`'s intervals as trained (`engine.training.intervals`): the
    trained calibration of each prediction's bin, times each region's error scale where the
    model had one (read from the same field of these regions); None, with a log line, where
    that field is missing."""
    from engine.training.intervals import error_scale, half_widths

    scale = interval.get("scale")
    if scale is None:
        return half_widths(interval["calibration"], predictions)
    field = scale["field"]
    if field not in fields:
        sink.log(f"{target}: no intervals ({LOW_PREFIX}{target}, {HIGH_PREFIX}{target}): its "
                 f"model scales them by the field {field}, which is not among these regions' "
                 "numeric fields; list it in --fields to get them")
        return None
    return half_widths(interval["calibration"], predictions, error_scale(scale, fields[field]))


def run_predict(dataset, job: dict, opts: dict, device: str, out_dir: Path,
                sink: EventSink) -> int:
    from engine.models.serialization import load_model
    from engine.tasks import region_fields, semantic_vectors
    from engine.training.features import literature_features, robust_features
    from engine.training.predictor import TaskInputs, load_fitted_task
    from engine.training.task_io import load_task_model
    from engine.training.train_srel import embed_with_model

    if not job.get("model"):
        raise InputError("no model folder was given", hint="Pass --model DIR (from `train`).")
    model_dir = Path(job["model"])
    manifest = _check_manifest(model_dir, dataset)
    sink.progress("srel", 0.0, "embedding the regions")
    srel = load_model(model_dir / "srel", device=device)
    embeddings = embed_with_model(srel, dataset, device=device)
    sink.progress("srel", 1.0, "done")
    targets = manifest["targets"]
    dataset.targets = {t: np.full(dataset.n_regions, np.nan) for t in targets}
    opts = {**opts, "language_model": manifest.get("language_model", "smollm2")}
    job = {**job, "task_descriptions": manifest.get("task_descriptions") or {}}
    semantic = semantic_vectors(dataset, job, opts, device, sink)
    features = {"raw": literature_features(dataset), "robust": robust_features(dataset)}
    predictions, extrapolated, intervals = {}, {}, {}
    fields = region_fields(dataset) or {}
    for target in targets:
        saved = load_task_model(model_dir / "tasks" / target)
        inputs = TaskInputs(embeddings, semantic.get(target), features, dataset.targets[target])
        fitted = load_fitted_task(saved, inputs, device=device)
        predictions[target], flags = fitted.predict_flagged(np.arange(dataset.n_regions))
        if fitted.reach is not None:  # models saved before the reach existed have none
            extrapolated[target] = flags
        interval = (manifest.get("intervals") or {}).get(target)
        if interval and interval.get("calibration"):
            half = _half_widths(target, interval, predictions[target], fields, sink)
            if half is not None:
                low = predictions[target] - half
                intervals[target] = (np.maximum(low, 0.0) if fitted.clip_negative else low,
                                     predictions[target] + half)
    id_field = output_id_field(job, manifest.get("id_field") or "region_id")
    with staged_output(out_dir, opts["overwrite"], ["regions.gpkg", "regions.csv"]) as stage:
        regions = write_regions(stage / "regions.gpkg", dataset,
                                region_table(dataset, embeddings, predictions, {}, id_field,
                                             extrapolated, intervals))
    sink.result(outputs={"regions": str(out_dir / regions.name)},
                metrics={"regions": dataset.n_regions, "targets": targets},
                summary=f"predictions for {', '.join(targets)} of {dataset.n_regions} regions "
                        f"written to {out_dir / regions.name}")
    return 0
