"""`train` and `evaluate`: SREL and per target the prompt vectors (side by side on the CPU for
cities on SREL's dense path), then per target the per-task model.

For every target: the language model reads each region's description after the task's prompt
(Prompt4RE's semantic vectors), the per-task model (engine/training/predictor.py) is evaluated by
outer K-fold under the chosen protocol, and the baselines are measured in the same run on the
same folds, so the table compares like with like.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engine.events import EventSink
from engine.outputs import EXTRAPOLATION_PREFIX
from engine.pipeline import labelled_targets, train_srel

METHOD_DEFAULT = "ToPT default (SREL + prompt vectors + raw features)"
METHOD_PROMPT4RE = "ToPT with the Prompt4RE head"
BAR = "raw_ridgecv"  # the baseline the default is anchored to and must beat
BASELINE_NAMES = {
    "raw_ridge1": "raw features, Ridge(alpha=1) (literature)",
    "raw_ridgecv": "raw features, RidgeCV (tuned in training folds)",
    "robust_ridgecv_log": "log features, RidgeCV on log target",
    "srel_ridgecv": "SREL embeddings, RidgeCV",
    # only for a target with region weights: the bar fitted by weighted least squares
    "raw_ridgecv_weighted": "raw features, weighted RidgeCV (in training folds)",
}
WEIGHTED_BAR = "raw_ridgecv_weighted"


def _scores(metrics: dict) -> dict:
    scores = {"MAE": float(metrics["mae"]), "RMSE": float(metrics["rmse"]),
              "R2": float(metrics["r2"])}
    for key in ("mae", "rmse", "r2"):  # with region weights
        if f"{key}_weighted" in metrics:
            scores[f"{key.upper()}_weighted"] = float(metrics[f"{key}_weighted"])
    return scores


def load_prompt_model(dataset, job: dict, opts: dict, device: str, sink: EventSink):
    """The frozen language model of the job, or None when no vectors are needed."""
    name = str(opts["language_model"])
    if name.lower() == "none" or not dataset.targets:
        return None
    from engine.language.models import load_language_model

    cache_dir = job.get("cache_dir")
    sink.progress("prompts", 0.0, f"loading {name}")
    return load_language_model(name, device=device,
                               cache_dir=Path(cache_dir) if cache_dir else None)


def semantic_vectors(dataset, job: dict, opts: dict, device: str, sink: EventSink, model=None,
                     after_batch=None, worker_threads: int | None = None):
    """Per target: (N, h) vectors from the frozen language model, or None without one.

    `model`: the loaded language model (else loaded here); `after_batch()`: called after each
    batch of regions (it may raise to stop); `worker_threads`: torch threads per batch on the
    CPU (see `LanguageModel.encode`)."""
    targets = list(dataset.targets)
    model = model or load_prompt_model(dataset, job, opts, device, sink)
    if model is None:
        return {t: None for t in targets}
    from engine.language.encode import encode_regions

    cache_dir = job.get("cache_dir")
    image = (job.get("image_raster") or {}).get("path")
    descriptions = job.get("task_descriptions") or {}
    vectors = {}
    for k, target in enumerate(targets):
        def progress(fraction, message="", k=k, target=target):
            sink.progress("prompts", (k + fraction) / len(targets), f"{target}: {message}")
            if after_batch is not None:
                after_batch()

        vectors[target] = encode_regions(dataset, target, model=model,
                                         description=descriptions.get(target), image_raster=image,
                                         cache_dir=cache_dir, device=device, progress=progress,
                                         worker_threads=worker_threads)
    sink.progress("prompts", 1.0, f"{len(targets)} task(s) encoded")
    return vectors


class _Stopped(Exception):
    """SREL stopped because the language model's side failed."""


def srel_and_semantic_vectors(dataset, job: dict, config, opts: dict, device: str,
                              sink: EventSink, timings: dict):
    """SREL's embeddings and the language model's vectors (neither reads the other).

    On the CPU, when SREL takes its dense path (N <= `dense_threshold`), the two run side by
    side, SREL in a second thread on one core, the language model on the others; the vectors
    get every core back once SREL is done. SREL's small (heads, N, N) steps gain little from a
    second core (Manhattan, 2 cores: 43 vs 47 ms per epoch) while the language model's matmuls
    gain 1.5x, so a cold-cache `make demo` (three tasks) took 291 s instead of 328 s one after
    the other. The choice depends only on the device, N and the job (never on the vector cache),
    so a job gives the same numbers each time: SREL's rounding depends on its thread count. The
    language model's batches always run on half the cores each (one on two cores), two side by
    side when the cores are free, so their numbers do not depend on when SREL finishes.
    """
    import torch

    from engine.language.models import lane_threads

    model = load_prompt_model(dataset, job, opts, device, sink)
    threads = torch.get_num_threads()
    worker_threads = lane_threads(threads)  # per language-model batch, whatever runs beside it
    side_by_side = (model is not None and device == "cpu" and threads > 1
                    and dataset.n_regions <= config.dense_threshold)
    if not side_by_side:
        t0 = time.monotonic()
        srel = train_srel(dataset, config, opts, device, sink)
        timings["srel_seconds"] = time.monotonic() - t0
        t0 = time.monotonic()
        semantic = semantic_vectors(dataset, job, opts, device, sink, model=model,
                                    worker_threads=worker_threads)
        timings["prompt_seconds"] = time.monotonic() - t0
        return srel, semantic

    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def srel_progress(fraction: float, message: str = "") -> None:
        if stop.is_set():
            raise _Stopped
        sink.progress("srel", fraction, message)

    def srel_job():
        torch.set_num_threads(1)  # this thread's count: SREL on one core
        t0 = time.monotonic()
        result = train_srel(dataset, config, opts, device, sink, progress=srel_progress)
        timings["srel_seconds"] = time.monotonic() - t0
        return result

    torch.set_num_threads(threads - 1)  # the language model's share while SREL trains
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="srel") as pool:
            future = pool.submit(srel_job)

            def after_batch() -> None:
                if not future.done():
                    return
                if future.exception() is not None:
                    future.result()  # SREL failed: its error now, not after the prompts
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)  # SREL is done: every core to the prompts

            try:
                t0 = time.monotonic()
                semantic = semantic_vectors(dataset, job, opts, device, sink, model=model,
                                            after_batch=after_batch,
                                            worker_threads=worker_threads)
                timings["prompt_seconds"] = time.monotonic() - t0
            except BaseException:
                stop.set()  # SREL stops at its next progress report
                raise
            srel = future.result()
    finally:
        torch.set_num_threads(threads)
    return srel, semantic


def predictor_options(job: dict):
    """The per-task model's settings: defaults, `--prompt4re`, and a job's "predictor" keys."""
    from engine.errors import InputError
    from engine.training.predictor import PredictorConfig

    overrides = dict(job.get("predictor") or {})
    if job.get("prompt4re"):
        overrides["prompt4re"] = True
    try:
        return PredictorConfig(**overrides)
    except TypeError as exc:
        raise InputError(f"unknown predictor option: {exc}") from exc


def region_fields(dataset) -> dict[str, np.ndarray] | None:
    """The numeric fields of the region layer (its "fields" view), by name: the candidates for
    a rate's denominator (`PredictorConfig.auto_weight`); None without such fields."""
    view = dataset.views.get("fields")
    if view is None:
        return None
    matrix = np.asarray(view.matrix.toarray() if hasattr(view.matrix, "toarray")
                        else view.matrix, dtype=np.float64)
    return {str(name): matrix[:, j] for j, name in enumerate(view.columns)}


def weighting_text(weighting: dict, field: str) -> str:
    """How a fit used the weight field `field` (`FittedTask.weighting`), for the log."""
    ratio = f"the largest weight is {weighting['weight_ratio']:.3g} times the smallest"
    if weighting["weighting"] != "precision":
        return f"as given: {ratio}"
    between = weighting["between_region_variance"]
    sampling = weighting["sampling_variance_at_mean_weight"]
    if sampling == 0:
        return (f"the errors do not shrink as {field} grows (between-region variance "
                f"{between:.3g}), so the regions weigh alike")
    return (f"error variance = {between:.3g} between regions + {sampling:.3g} x (mean {field} / "
            f"{field}) of sampling noise; {ratio}")


def _weighted_versus(target: str, weights, y, held_out, evaluation, baselines, method: str,
                     dataset, sink: EventSink) -> dict:
    """For a target with region weights: how the weights entered and the default against the
    weighted bar in weighted R² (both logged), as {"weights": {...}, "versus_weighted_bar":
    {...}}; {} without weights."""
    if weights is None:
        return {}
    from engine.training.metrics import paired_r2_difference, versus_text

    versus = paired_r2_difference(
        y[held_out], [evaluation.pooled.predictions[held_out]],
        [baselines[WEIGHTED_BAR].predictions[held_out]], evaluation.pooled.fold[held_out],
        weights=weights[held_out])
    field = dataset.weight_fields.get(target)
    sink.log(f"{target}: weights from field {field}: "
             f"{weighting_text(evaluation.final.weighting, field)}")
    own = evaluation.pooled.metrics["r2_weighted"]
    bar = baselines[WEIGHTED_BAR].metrics["r2_weighted"]
    sink.log(f"{target}: weighted R2 (weights: field {field}) "
             f"{own:.3f} (the weighted bar, {BASELINE_NAMES[WEIGHTED_BAR]}: {bar:.3f}; "
             f"difference {versus_text(versus)})")
    return {"weights": {"field": field, "r2_weighted": own},
            "versus_weighted_bar": {"method": method, "bar": BASELINE_NAMES[WEIGHTED_BAR],
                                    **versus}}


def prediction_intervals(evaluation, y: np.ndarray, level: float, weights: np.ndarray | None,
                         weight_field: str | None, denominators: dict[str, np.ndarray] | None):
    """(low, high, summary, final scale model) of every region's prediction at `level`
    (`engine.training.intervals.cross_conformal`): each fold's errors scaled by its own model's
    precision weights where it had them (`weights`, the values of the named `weight_field`,
    or the field of `denominators` it read them from), the final model's for the unlabelled
    regions."""
    from engine.training.intervals import cross_conformal, error_scale, scale_model

    fold = evaluation.pooled.fold
    labelled = np.flatnonzero(fold >= 0)
    values = dict(denominators or {})
    if weights is not None:
        values[weight_field] = weights

    def model_of(weighting, train):
        field = weighting["field"] if weighting and weighting.get("automatic") else weight_field
        return scale_model(weighting, field, values.get(field), train)

    def values_of(model):
        return None if model is None else values[model["field"]]

    models = {info["fold"]: model_of(info.get("weighting"), labelled[fold[labelled] != info["fold"]])
              for info in evaluation.choices}
    models[-1] = model_of(evaluation.final.weighting, labelled)
    scales = {k: error_scale(m, values_of(m)) for k, m in models.items()}
    low, high, summary = cross_conformal(y, evaluation.pooled.predictions, fold, level, scales,
                                         sized=evaluation.pooled.clipped)
    if evaluation.pooled.clipped:  # counts: no interval reaches below 0 (NaN stays NaN)
        low = np.maximum(low, 0.0)
        width = (high - low)[np.isfinite(high)]
        if len(width):  # the widths as written
            summary.update(mean_width=float(width.mean()), median_width=float(np.median(width)))
    return low, high, summary, models[-1]


def run_tasks(command: str, dataset, job: dict, config, opts: dict, device: str, out_dir: Path,
              sink: EventSink, started: float) -> int:
    from engine.training.baselines import evaluate_baselines, ridge_cv_fit_predict
    from engine.training.cv import PROTOCOL_LABELS, cross_val_predict_pooled
    from engine.training.features import literature_features, robust_features
    from engine.training.metrics import (
        clustering_metrics,
        extrapolation_summary,
        extrapolation_text,
        paired_r2_difference,
        versus_text,
    )
    from engine.training.predictor import TaskInputs, evaluate_task

    targets = labelled_targets(dataset)
    if command == "evaluate" and not targets and not dataset.classes:
        from engine.errors import InputError

        raise InputError("nothing to evaluate: no target field and no class field",
                         hint="Pass --targets and/or --classes.")
    timings: dict[str, float] = {}
    srel, semantic = srel_and_semantic_vectors(dataset, job, config, opts, device, sink, timings)
    embeddings = srel.embeddings

    literature = literature_features(dataset)
    robust = robust_features(dataset)
    features = {"raw": literature, "robust": robust}
    folds, shuffle, seed = int(opts["folds"]), bool(opts["shuffle"]), int(opts["seed"])
    fold_seed = 0  # unshuffled folds have no seed
    if shuffle:
        fold_seed = seed if opts.get("fold_seed") is None else int(opts["fold_seed"])
    protocol = opts["protocol"]
    predictor_config = predictor_options(job)
    denominators = region_fields(dataset)
    level = float(opts.get("interval_level") or 0)  # checked by `pipeline.options`
    tasks, predictions, fold_of, final_models, extrapolated = {}, {}, {}, {}, {}
    intervals, interval_models = {}, {}
    t0 = time.monotonic()
    for k, (target, y) in enumerate(targets.items()):
        def progress(fraction, message="", k=k, target=target):
            sink.progress("fit", (k + fraction) / len(targets), f"{target}: {message}")

        weights = dataset.target_weights.get(target)  # None: every region counts once
        inputs = TaskInputs(embeddings, semantic.get(target), features, y, weights,
                            None if weights is not None else denominators)
        evaluation = evaluate_task(inputs, folds=folds, shuffle=shuffle, fold_seed=fold_seed,
                                   protocol=protocol, seed=seed, device=device,
                                   progress=progress, config=predictor_config)
        method = METHOD_PROMPT4RE if predictor_config.prompt4re else METHOD_DEFAULT
        methods = {method: _scores(evaluation.metrics)}
        baselines = evaluate_baselines(literature, robust, y, folds=folds, shuffle=shuffle,
                                       seed=fold_seed, protocol="clean", weights=weights)
        baselines["srel_ridgecv"] = cross_val_predict_pooled(
            ridge_cv_fit_predict(), embeddings, y, folds=folds, shuffle=shuffle, seed=fold_seed,
            weights=weights)
        pooled = {method: evaluation.pooled}
        for key, label in BASELINE_NAMES.items():
            if key in baselines:
                methods[label] = _scores(baselines[key].metrics)
                pooled[label] = baselines[key]
        held_out = evaluation.pooled.fold >= 0
        for label, result in pooled.items():  # how sure each R² is, on these regions
            interval = paired_r2_difference(y[held_out], [result.predictions[held_out]], [])
            methods[label]["R2_interval"] = [interval["low"], interval["high"]]
            if weights is not None:
                interval = paired_r2_difference(y[held_out], [result.predictions[held_out]], [],
                                                weights=weights[held_out])
                methods[label]["R2_weighted_interval"] = [interval["low"], interval["high"]]
        versus = paired_r2_difference(
            y[held_out], [evaluation.pooled.predictions[held_out]],
            [baselines[BAR].predictions[held_out]], evaluation.pooled.fold[held_out])
        reach = extrapolation_summary(y, evaluation.pooled.predictions,
                                      evaluation.extrapolated, held_out, dataset.region_ids)
        tasks[target] = {"methods": methods, "labelled": int(np.isfinite(y).sum()),
                         "versus_bar": {"method": method, "bar": BASELINE_NAMES[BAR], **versus},
                         **_weighted_versus(target, weights, y, held_out, evaluation, baselines,
                                            method, dataset, sink),
                         "extrapolation": reach,
                         "final_model": evaluation.final.describe(),
                         "fold_choices": evaluation.choices}
        predictions[target] = evaluation.pooled.predictions
        fold_of[target] = evaluation.pooled.fold
        final_models[target] = evaluation.final
        extrapolated[target] = evaluation.extrapolated
        if level:
            low, high, summary, scale = prediction_intervals(
                evaluation, y, level, weights, (job.get("target_weights") or {}).get(target),
                None if weights is not None else denominators)
            intervals[target] = (low, high)
            interval_models[target] = {"level": level, "calibration": summary.pop("calibration"),
                                       "scale": scale}
            tasks[target]["interval"] = summary
        bar = methods[BASELINE_NAMES[BAR]]["R2"]
        sink.log(f"{target}: R2 {methods[method]['R2']:.3f} (the bar, "
                 f"{BASELINE_NAMES[BAR]}, in this run: {bar:.3f}; difference {versus_text(versus)})")
        automatic = evaluation.final.weighting or {}
        if automatic.get("automatic"):
            field = automatic["field"]
            tasks[target]["weight_hint"] = {"field": field, "p_value": automatic["p_value"]}
            sink.warning(
                f"{target}: its errors shrink as {field} grows (p = {automatic['p_value']:.1g}), "
                f"as a rate's over a small denominator do, so it was fitted with weights from "
                f"{field} ({weighting_text(automatic, field)}). If {target} is a rate or ratio "
                f"over {field}, name it as its weight (--target-weight {target}={field}; in "
                "QGIS, 'Weight field per target') for weighted figures too; --no-auto-weight "
                "(in QGIS, the advanced option on automatic weights) fits it unweighted.")
        if reach["regions"]:
            sink.log(f"{target}: {extrapolation_text(reach, dataset.n_regions)} "
                     f"(field {EXTRAPOLATION_PREFIX}{target})")
    timings["fit_seconds"] = time.monotonic() - t0
    sink.progress("fit", 1.0, "done")

    clustering = {name: {k.upper(): v for k, v in
                         clustering_metrics(embeddings, classes, seed=seed,
                                            n_clusters=opts.get("clusters")).items()}
                  for name, classes in dataset.classes.items()}
    timings["total_seconds"] = time.monotonic() - started
    metrics = {
        "command": command, "protocol": protocol, "optimistic": protocol == "paper",
        "protocol_label": PROTOCOL_LABELS[protocol], "folds": folds, "shuffle": shuffle,
        "fold_seed": fold_seed if shuffle else None, "seed": seed, "device": device, "language_model": opts["language_model"],
        "regions": dataset.n_regions, "tasks": tasks, "clustering": clustering,
        "srel": {"config": asdict(config), "final_loss": srel.losses[-1] if srel.losses else None,
                 "epochs": len(srel.losses), "notes": srel.notes},
        "timings": timings, "dataset": dataset.summary(),
    }
    from engine.writing import write_task_outputs

    return write_task_outputs(command, dataset, job, config, opts, out_dir, sink, srel=srel,
                              metrics=metrics, predictions=predictions, fold_of=fold_of,
                              final_models=final_models, extrapolated=extrapolated,
                              intervals=intervals, interval_models=interval_models)
