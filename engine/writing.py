"""Writes what `train` and `evaluate` produce, all at once at the end of a successful run."""

from __future__ import annotations

from pathlib import Path

from engine import __version__
from engine.events import EventSink
from engine.outputs import (
    EXTRAPOLATION_PREFIX,
    HIGH_PREFIX,
    LOW_PREFIX,
    output_id_field,
    region_table,
    staged_output,
    write_json,
    write_regions,
)
from engine.training.intervals import interval_text
from engine.training.metrics import extrapolation_text, versus_text

OUTPUT_NAMES = ["regions.gpkg", "regions.csv", "model", "metrics.json", "report.html"]


def manifest(dataset, job: dict, opts: dict, targets: list[str],
             weighting: dict[str, dict] | None = None,
             intervals: dict[str, dict] | None = None) -> dict:
    """What a model was trained on: `predict` refuses regions described differently.
    `weighting`: target -> how its final model used region weights (named or read off the
    errors), for the record; `intervals`: target -> the level, the calibration (bins,
    quantiles, size scale) and the error scale of its predictions' intervals, which `predict`
    applies."""
    return {
        "format": "topt-model", "version": 1, "engine_version": __version__,
        "views": {name: {"kind": v.kind, "columns": list(map(str, v.columns)) if v.kind != "flow"
                         else None} for name, v in dataset.views.items()},
        "targets": targets, "id_field": (job.get("regions") or {}).get("id_field"),
        "language_model": opts["language_model"],
        "task_descriptions": job.get("task_descriptions") or {},
        "target_weights": {t: f for t, f in (job.get("target_weights") or {}).items()
                           if t in targets},
        "weighting": dict(weighting or {}),
        "intervals": dict(intervals or {}),
        "seed": opts["seed"], "protocol": opts["protocol"],
    }


def write_task_outputs(command: str, dataset, job: dict, config, opts: dict, out_dir: Path,
                       sink: EventSink, *, srel, metrics: dict, predictions: dict,
                       fold_of: dict, final_models: dict,
                       extrapolated: dict | None = None, intervals: dict | None = None,
                       interval_models: dict | None = None) -> int:
    from engine.models.serialization import save_model
    from engine.report import write_report
    from engine.training.task_io import save_task_model

    id_field = output_id_field(job)
    sink.progress("write", 0.0, "writing outputs")
    with staged_output(out_dir, opts["overwrite"], OUTPUT_NAMES) as stage:
        outputs = {}
        if command == "train":
            columns = region_table(dataset, srel.embeddings, predictions, fold_of, id_field,
                                   extrapolated, intervals)
            regions = write_regions(stage / "regions.gpkg", dataset, columns)
            outputs["regions"] = str(out_dir / regions.name)
            model_dir = stage / "model"
            save_model(srel.model, config, model_dir / "srel")
            for target, final in final_models.items():
                save_task_model(final, model_dir / "tasks" / target)
            write_json(model_dir / "manifest.json",
                       manifest(dataset, job, opts, list(final_models),
                                {t: m.weighting for t, m in final_models.items()
                                 if getattr(m, "weighting", None)}, interval_models))
            outputs["model"] = str(out_dir / "model")
        write_json(stage / "metrics.json", metrics)
        outputs["metrics"] = str(out_dir / "metrics.json")
        sink.progress("write", 0.5, "writing the report")
        curves = {"SREL loss": srel.losses}
        for name, values in (getattr(srel, "loss_parts", None) or {}).items():
            curves[f"SREL {name}"] = values
        write_report(stage / "report.html", dataset=dataset, metrics=metrics, curves=curves,
                     observed=dict(dataset.targets), predicted=predictions,
                     extrapolated=extrapolated,
                     title="ToPT: " + ", ".join(dataset.targets) if dataset.targets
                     else "ToPT embeddings")
        outputs["report"] = str(out_dir / "report.html")
    sink.progress("write", 1.0, "done")
    lines = []
    for target, entry in metrics["tasks"].items():
        for method, s in entry["methods"].items():
            interval = (f" [{s['R2_interval'][0]:6.3f}, {s['R2_interval'][1]:6.3f}]"
                        if s.get("R2_interval") else "")
            weighted = (f"  weighted R2 {s['R2_weighted']:6.3f}" if "R2_weighted" in s else "")
            lines.append(f"{target:<16} {method:<52} MAE {s['MAE']:10.2f}  RMSE {s['RMSE']:10.2f}"
                         f"  R2 {s['R2']:6.3f}{interval}{weighted}")
        if entry.get("versus_bar"):
            lines.append(f"{target:<16} {'the default minus the bar (R2, paired)':<52} "
                         f"{versus_text(entry['versus_bar'])}")
        if entry.get("versus_weighted_bar"):
            label = "the default minus the weighted bar (weighted R2)"
            lines.append(f"{target:<16} {label:<52} "
                         f"{versus_text(entry['versus_weighted_bar'])}")
        if entry.get("interval") and entry["interval"]["coverage"] is not None:
            label = (f"{entry['interval']['level']:.0%} intervals ({LOW_PREFIX}{target}, "
                     f"{HIGH_PREFIX}{target})")
            lines.append(f"{target:<16} {label:<52} {interval_text(entry['interval'])}")
        if (entry.get("extrapolation") or {}).get("regions"):
            label = f"extrapolations (field {EXTRAPOLATION_PREFIX}{target})"
            lines.append(f"{target:<16} {label:<52} "
                         f"{extrapolation_text(entry['extrapolation'], metrics['regions'])}")
    for field, s in metrics["clustering"].items():
        lines.append(f"clustering {field}: NMI {s['NMI']:.3f}  ARI {s['ARI']:.3f}")
    header = (f"{metrics['regions']} regions, {metrics['folds']} folds, "
              f"{metrics['protocol_label']}; {metrics['timings']['total_seconds']:.0f} s")
    sink.result(outputs=outputs, metrics=metrics, summary="\n".join([header, *lines]))
    return 0

