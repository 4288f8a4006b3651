"""SREL embeddings -> Ridge(alpha=1) with the embedding's epoch chosen on the evaluation labels.

HAFusion's released code, whose published Manhattan figures the benchmark prints beside ours,
trains one run per task, scores the embeddings every 30 epochs with that task's Ridge(1) on the
labels it reports and keeps the best (`../shared/REFERENCE.md`, defect 2). To compare our SREL with those figures like for like, this
part trains SREL at the engine's fixed schedule, embeds the regions every `every` epochs, and
evaluates each snapshot with the literature's protocol (Ridge(alpha=1), pooled K-fold, negatives
clipped). It reports:

- clean: the fixed schedule's last epoch (what the engine returns; no label chooses anything);
- OPTIMISTIC, one epoch for all tasks: the snapshot with the best mean R² over the tasks;
- OPTIMISTIC, an epoch per task: each task's best snapshot (the most favourable reading);
- beside them, RidgeCV (penalty by leave-one-out in the training folds) on the z-scored
  snapshots, as the engine's candidates read them: at the fixed schedule (clean) and at each
  task's best snapshot (OPTIMISTIC), to show how much of the curve is Ridge(1)'s fixed penalty.

The difference between the clean and the optimistic rows is what the selection adds; the
optimistic rows are for the published comparison only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.quality import LITERATURE_TASKS, MANHATTAN, QualitySettings, resolve_tasks
from bench.quality import _pooled as pooled_metrics
from bench.quality import _summary as mean_and_std

Log = Callable[[str], None]


def _pooled(embeddings: np.ndarray, y: np.ndarray, folds: int, shuffle: bool,
            tuned: bool = False) -> dict:
    """Ridge(alpha=1) on the embeddings as they are (the literature), or with `tuned` RidgeCV
    (penalty by leave-one-out inside the training folds) on the z-scored embeddings, as the
    engine's candidates read them."""
    from engine.training.baselines import ridge_cv_fit_predict, ridge_fit_predict
    from engine.training.features import zscore

    settings = QualitySettings(folds=folds, shuffle=shuffle)
    if tuned:
        return pooled_metrics(ridge_cv_fit_predict(), zscore(embeddings), y, settings, "clean")
    return pooled_metrics(ridge_fit_predict(1.0), embeddings, y, settings, "clean")


def run_srel_epochs(data: str | Path = MANHATTAN, *, seeds: tuple[int, ...] = (0, 1, 2),
                    every: int = 20, tasks: tuple[str, ...] | None = None, folds: int = 10,
                    shuffle: bool = False, epochs: int | None = None, device: str = "cpu",
                    log: Log = print, city: str | None = None) -> dict:
    """The three rows per task (see the module's docstring) and each snapshot's R²; JSON-able."""
    from engine.data.benchmark import load_benchmark_folder
    from engine.models.modeling_srel import SRELConfig
    from engine.training.train_srel import fit_srel

    dataset = load_benchmark_folder(data, city=city)
    names, missing = resolve_tasks(tasks or LITERATURE_TASKS, dataset.targets)
    out: dict = {"data": str(data), "regions": dataset.n_regions, "tasks": names,
                 "missing_tasks": missing, "seeds": list(seeds), "every": every, "folds": folds,
                 "shuffle": shuffle, "per_seed": []}
    for seed in seeds:
        start = time.perf_counter()
        result = fit_srel(dataset, SRELConfig(epochs=epochs), device=device, seed=seed,
                          snapshot_every=every)
        snapshots = sorted(result.snapshots)
        curves = {task: [_pooled(result.snapshots[e], dataset.targets[task], folds, shuffle)
                         for e in snapshots] for task in names}
        tuned = {task: [_pooled(result.snapshots[e], dataset.targets[task], folds, shuffle,
                                tuned=True)["r2"] for e in snapshots] for task in names}
        r2 = {task: np.array([m["r2"] for m in curves[task]]) for task in names}
        shared = int(np.argmax(np.mean([r2[task] for task in names], axis=0)))
        run = {"seed": seed, "epochs": result.epochs, "snapshot_epochs": snapshots,
               "r2_by_epoch": {task: r2[task].round(5).tolist() for task in names},
               "ridgecv_r2_by_epoch": {task: np.round(tuned[task], 5).tolist() for task in names},
               "shared_epoch": snapshots[shared], "tasks": {}}
        for task in names:
            best = int(np.argmax(r2[task]))
            run["tasks"][task] = {"clean": curves[task][-1],
                                  "ridgecv_clean": {"r2": tuned[task][-1]},
                                  "ridgecv_per_task": {"r2": max(tuned[task])},
                                  "one_epoch": curves[task][shared],
                                  "per_task": {**curves[task][best], "epoch": snapshots[best]}}
        out["per_seed"].append(run)
        log(f"  SREL epochs seed {seed}: {result.epochs} epochs, {len(snapshots)} snapshots, "
            f"{time.perf_counter() - start:.0f} s; " + ", ".join(
                f"{t} {run['tasks'][t]['clean']['r2']:.3f} -> "
                f"{run['tasks'][t]['per_task']['r2']:.3f} (epoch {run['tasks'][t]['per_task']['epoch']})"
                for t in names))
    out["summary"] = summarise(out)
    return out


def summarise(result: dict) -> dict:
    """Per task and row: mean and std over seeds of MAE, RMSE and R² (and the epochs chosen)."""
    summary: dict = {}
    for task in result["tasks"]:
        summary[task] = {}
        for row in ("clean", "one_epoch", "per_task", "ridgecv_clean", "ridgecv_per_task"):
            runs = [run["tasks"][task][row] for run in result["per_seed"]]
            entry = mean_and_std(runs)
            if row == "per_task":
                entry["epochs"] = [r["epoch"] for r in runs]
            if row == "one_epoch":
                entry["epochs"] = [run["shared_epoch"] for run in result["per_seed"]]
            summary[task][row] = entry
    return summary


def epoch_plot(result: dict, path: Path) -> Path:
    """R² of Ridge(1) on the embeddings against SREL's epoch, one line per task (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["per_seed"]
    epochs = runs[0]["snapshot_epochs"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for index, task in enumerate(result["tasks"]):
        colour = f"C{index}"
        curve = np.mean([run["r2_by_epoch"][task] for run in runs], axis=0)
        ax.plot(epochs, curve, color=colour, label=f"{task}, Ridge(1)")
        tuned = np.mean([run["ridgecv_r2_by_epoch"][task] for run in runs], axis=0)
        ax.plot(epochs, tuned, color=colour, linestyle="--", linewidth=1,
                label=f"{task}, RidgeCV (z-scored)")
    ax.axvline(runs[0]["epochs"], color="grey", linestyle=":", label="fixed schedule (clean)")
    ax.set_xlabel("SREL epoch")
    ax.set_ylabel("R² on the embeddings")
    ax.set_title(f"SREL on {Path(result['data']).name}: every epoch scored on the labels "
                 f"(mean of {len(runs)} seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
