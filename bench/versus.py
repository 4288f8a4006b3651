"""The engine's default against the bar, paired over the same regions.

The quality table gives each model's R² as a mean over seeds; whether a difference of 0.005
between two rows is a difference at all it does not say. Here the two models' out-of-fold
predictions of the same regions (same folds) are compared region by region:

- the R² difference (mean over seeds of the default's R² minus the other's),
- its 95% interval from a paired bootstrap over the evaluated regions
  (`engine.training.metrics.paired_r2_difference`: scipy's `stats.bootstrap`, percentile
  method; the regions are resampled, and on each resample the two models' mean squared
  errors are differenced and divided by the variance of all the evaluated regions, so that
  one region holding most of the variance cannot blow the interval up). It is the
  evaluation's sampling uncertainty with the fold models held fixed: it
  does not retrain anything, so it says how sure one can be on *these* regions, not on
  another city;
- the folds (of K) on which the default's squared error is the lower.

Comparisons, per task and per split (the literature's unshuffled folds, and shuffled ones):
the default against the bar (`raw_ridgecv`: RidgeCV on the literature's raw features), the
default against itself without SREL and the prompt vectors (what the learnt parts add), and
that features-only default against the bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.quality import LITERATURE_TASKS, MANHATTAN, pooled_prediction, resolve_tasks
from engine.training.cv import LITERATURE_SEED
from engine.training.metrics import paired_r2_difference, regression_metrics

Log = Callable[[str], None]

# (name, the model, the one it is measured against)
COMPARISONS = (
    ("default_vs_bar", "engine default", "the bar (raw features -> RidgeCV)"),
    ("default_vs_features_only", "engine default",
     "the default without SREL and prompt vectors"),
    ("features_only_vs_bar", "the default without SREL and prompt vectors",
     "the bar (raw features -> RidgeCV)"),
)
# For a target with region weights (a rate's population): the default fitted with them, against
# the bar fitted with them, the plain bar and the plain default; (name, model, other, metric)
WEIGHTED = "engine default, weighted"
WEIGHTED_BAR = "the bar, weighted (weighted RidgeCV)"
WEIGHTED_COMPARISONS = (
    ("weighted_vs_weighted_bar", WEIGHTED, WEIGHTED_BAR, "r2_weighted"),
    ("weighted_vs_bar", WEIGHTED, "the bar (raw features -> RidgeCV)", "r2_weighted"),
    ("weighted_vs_default", WEIGHTED, "engine default", "r2_weighted"),
    ("weighted_vs_bar_plain_r2", WEIGHTED, "the bar (raw features -> RidgeCV)", "r2"),
)


def run_versus(data: str | Path = MANHATTAN, *, seeds: tuple[int, ...] = (0, 1, 2),
               tasks: tuple[str, ...] | None = None, folds: int = 10,
               language_model: str = "smollm2", srel_epochs: int | None = None,
               device: str = "cpu", cache_dir: str | None = None,
               predictor_options: dict | None = None, log: Log = print,
               literature_shuffle: bool = False, city: str | None = None) -> dict:
    """Every comparison of `COMPARISONS`, per task and split, on the benchmark folder `data`
    (or a RegionDataset, e.g. a synthetic city): `folds` unshuffled and shuffled (seed 2024);
    `literature_shuffle` says which of the two is the city's literature split (the one the
    goals read), `city` which city's rule for zero targets the folder is read with. A task
    with region weights (`dataset.target_weights`) adds the rows of `WEIGHTED_COMPARISONS`."""
    import torch

    from bench.quality import method_fit_predict
    from engine.data.benchmark import load_benchmark_folder
    from engine.language.encode import encode_regions
    from engine.models.modeling_srel import SRELConfig
    from engine.tasks import region_fields
    from engine.training.baselines import ridge_cv_fit_predict
    from engine.training.features import literature_features, robust_features
    from engine.training.train_srel import fit_srel

    dataset = (load_benchmark_folder(data, city=city) if isinstance(data, (str, Path))
               else data)
    names, missing = resolve_tasks(tasks or LITERATURE_TASKS, dataset.targets)
    literature = literature_features(dataset)
    features = {"raw": literature, "robust": robust_features(dataset)}
    # the region layer's numeric fields, which the engine may read as a rate's denominator
    options = {**dict(predictor_options or {}), "denominators": region_fields(dataset)}
    embeddings, srel_seconds = {}, []
    for seed in seeds:
        torch.manual_seed(seed)
        log(f"  SREL seed {seed} ...")
        result = fit_srel(dataset, SRELConfig(epochs=srel_epochs), device=device, seed=seed)
        embeddings[seed] = result.embeddings
        srel_seconds.append(result.seconds)
    splits = (("unshuffled", False), ("shuffled", True))
    out = {"data": str(data) if isinstance(data, (str, Path)) else "a RegionDataset",
           "regions": dataset.n_regions, "tasks": names,
           "missing_tasks": missing, "seeds": list(seeds), "folds": folds,
           "language_model": language_model, "shuffle_seed": LITERATURE_SEED,
           "literature_split": "shuffled" if literature_shuffle else "unshuffled",
           "srel_epochs": result.epochs, "srel_seconds": srel_seconds, "rows": []}
    for task in names:
        y = dataset.targets[task]
        start = time.perf_counter()
        semantic = encode_regions(dataset, task, model=language_model, cache_dir=cache_dir,
                                  device=device)
        log(f"  prompts {task}: {time.perf_counter() - start:.1f} s")
        for split, shuffle in splits:
            split_folds = {"folds": folds, "shuffle": shuffle}
            bar = pooled_prediction(ridge_cv_fit_predict(), literature, y, **split_folds)
            default = [pooled_prediction(method_fit_predict(embeddings[s], semantic, features,
                                                            seed=s, device=device,
                                                            options=options), None, y,
                                         **split_folds) for s in seeds]
            alone = [pooled_prediction(method_fit_predict(None, None, features, seed=s,
                                                          device=device, options=options),
                                       None, y, **split_folds) for s in seeds]
            evaluated = bar.fold >= 0
            predictions = {
                "engine default": [p.predictions[evaluated] for p in default],
                "the default without SREL and prompt vectors":
                    [p.predictions[evaluated] for p in alone],
                "the bar (raw features -> RidgeCV)": [bar.predictions[evaluated]],
            }
            comparisons = [(*c, "r2") for c in COMPARISONS]
            weights = getattr(dataset, "target_weights", {}).get(task)
            if weights is not None:
                weighted_options = {**options, "weights": weights, "denominators": None}
                predictions[WEIGHTED_BAR] = [pooled_prediction(
                    ridge_cv_fit_predict(weights=weights), literature, y,
                    **split_folds).predictions[evaluated]]
                predictions[WEIGHTED] = [pooled_prediction(
                    method_fit_predict(embeddings[s], semantic, features, seed=s, device=device,
                                       options=weighted_options), None, y,
                    **split_folds).predictions[evaluated] for s in seeds]
                comparisons += WEIGHTED_COMPARISONS
            for name, model, other, metric in comparisons:
                w = weights[evaluated] if metric == "r2_weighted" else None
                compared = paired_r2_difference(y[evaluated], predictions[model],
                                                predictions[other], bar.fold[evaluated],
                                                weights=w)
                scores = {m: float(np.mean([regression_metrics(y[evaluated], p, w)[metric]
                                            for p in predictions[m]])) for m in (model, other)}
                out["rows"].append({"task": task, "split": split, "comparison": name,
                                    "model": model, "other": other, "metric": metric,
                                    "r2_model": scores[model], "r2_other": scores[other],
                                    **compared})
                log(f"  {task:<13} {split:<10} {name:<26} {compared['difference']:+.4f} "
                    f"[{compared['low']:+.4f}, {compared['high']:+.4f}]")
    return out
