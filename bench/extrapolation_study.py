"""How many predictions the `ext_<target>` flag marks, and how much of the error they hold;
and how often the 90% intervals (`lo_`, `hi_`) hold the held-out values.

For each place, task and fold order: the default per-task model on the raw and robust features
(no SREL, no prompt vectors: the flags read the anchor's raw features only, and these runs take
seconds), 10 folds (25 for the 77-region synthetic cities, Chicago's protocol), then
`metrics.extrapolation_summary` of the flags each fold's model gave its held-out regions. A flag
is worth having where the few regions it marks hold much more than their share of the squared
error. The same evaluations give each row's prediction intervals (`engine.tasks.
prediction_intervals`, as `train` writes them): the share of held-out values inside, overall and
by fifth of the predictions. Places: Manhattan (`--data`), the real places of `bench.real_places`, and eight synthetic
cities of 77 regions (seeds 20-27, Voronoi and grid).

    python -m bench.extrapolation_study [--data ../shared/data/manhattan] [--json out.json]

Prints a markdown table; docs/quality-notes.md holds its figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

SYNTHETIC_SEEDS = tuple(range(20, 28))
INTERVAL_LEVEL = 0.9  # the engine's default
MANHATTAN_TASKS = ("crime", "check_in", "service_call", "carbon", "income")


def flag_rows(name: str, dataset, targets, folds: int) -> list[dict]:
    """One row per target and fold order (file order, then shuffled with seed 2024)."""
    from engine.tasks import prediction_intervals, region_fields
    from engine.training.features import literature_features, robust_features
    from engine.training.metrics import extrapolation_summary, regression_metrics
    from engine.training.predictor import TaskInputs, evaluate_task

    features = {"raw": literature_features(dataset), "robust": robust_features(dataset)}
    denominators = region_fields(dataset)  # as the engine's `train` gives them
    rows = []
    for target in targets:
        y = np.asarray(dataset.targets[target], dtype=np.float64)
        for shuffle in (False, True):
            evaluation = evaluate_task(TaskInputs(None, None, features, y, None, denominators),
                                       folds=folds, shuffle=shuffle)
            held = evaluation.pooled.fold >= 0
            summary = extrapolation_summary(y, evaluation.pooled.predictions,
                                            evaluation.extrapolated, held, dataset.region_ids)
            flagged = (evaluation.extrapolated > 0) & held
            interval = prediction_intervals(evaluation, y, INTERVAL_LEVEL, None, None,
                                            denominators)[2]
            rows.append({
                "place": name, "target": target, "shuffled": shuffle, "evaluated": int(held.sum()),
                "r2": regression_metrics(y[held], evaluation.pooled.predictions[held])["r2"],
                "flagged": int(flagged.sum()), "inputs_beyond": int(
                    ((evaluation.extrapolated & 1) > 0)[held].sum()),
                "prediction_beyond": int(((evaluation.extrapolated & 2) > 0)[held].sum()),
                "error_share": summary["error_share"],
                "interval": {key: interval[key] for key in (
                    "level", "coverage", "coverage_by_fifth", "median_width", "bins",
                    "scaled", "size_power")}})
    return rows


def run_study(data: Path | None, *, synthetic_seeds=SYNTHETIC_SEEDS, real: bool = True,
              log=print) -> list[dict]:
    from bench.real_places import REAL_PLACES, place_dataset
    from engine.data.benchmark import load_benchmark_folder
    from engine.data.synthetic import make_synthetic_city

    rows = []
    if data is not None:
        manhattan = load_benchmark_folder(data)
        rows += flag_rows("manhattan", manhattan,
                          [t for t in MANHATTAN_TASKS if t in manhattan.targets], 10)
        log(f"manhattan: {len(rows)} rows")
    if real:
        with tempfile.TemporaryDirectory() as folder:
            for place in REAL_PLACES:
                rows += flag_rows(place.name, place_dataset(place, Path(folder)), place.targets,
                                  10)
                log(f"{place.name}: done")
    for seed in synthetic_seeds:
        city = make_synthetic_city(77, seed, kind="voronoi" if seed % 2 == 0 else "grid")
        rows += flag_rows(f"synthetic-77-{seed}", city,
                          [t for t in ("crime", "check_in", "income") if t in city.targets], 25)
        log(f"synthetic 77 / {seed}: done")
    return rows


def group(place: str) -> str:
    return ("Manhattan" if place == "manhattan"
            else "77-region synthetic cities" if place.startswith("synthetic") else "real places")


def table(rows: list[dict]) -> str:
    """Per group of places: rows, regions evaluated, regions flagged (share), the flagged
    regions' mean share of the squared error per row, and the rows where they hold over half."""
    lines = ["| places | task rows | regions held out | flagged (share) | their mean share of "
             "the squared error | rows where they hold > 50% |", "|---|---|---|---|---|---|"]
    for name in ("Manhattan", "real places", "77-region synthetic cities"):
        chosen = [r for r in rows if group(r["place"]) == name]
        if not chosen:
            continue
        evaluated = sum(r["evaluated"] for r in chosen)
        flagged = sum(r["flagged"] for r in chosen)
        share = float(np.mean([r["error_share"] for r in chosen]))
        over = sum(r["error_share"] > 0.5 for r in chosen)
        lines.append(f"| {name} | {len(chosen)} | {evaluated:,} | {flagged} "
                     f"({flagged / evaluated:.1%}) | {share:.1%} | {over} |")
    return "\n".join(lines)


def interval_table(rows: list[dict]) -> str:
    """Per group of places: how often the intervals held the held-out values (mean and range
    over the rows, and the mean in each fifth of the predictions), and in how many rows they
    grew with the prediction or with a weight field."""
    lines = ["| places | task rows | held, mean (lowest - highest row) | by fifth of the "
             "predictions, smallest first (mean) | rows grown with the prediction / by a "
             "weight field |", "|---|---|---|---|---|"]
    for name in ("Manhattan", "real places", "77-region synthetic cities"):
        chosen = [r["interval"] for r in rows
                  if group(r["place"]) == name and (r.get("interval") or {}).get("coverage")
                  is not None]
        if not chosen:
            continue
        held = [i["coverage"] for i in chosen]
        fifths = [i["coverage_by_fifth"] for i in chosen
                  if i.get("coverage_by_fifth") and None not in i["coverage_by_fifth"]]
        by_fifth = (" / ".join(f"{v:.0%}" for v in np.mean(fifths, axis=0)) if fifths else "-")
        lines.append(f"| {name} | {len(chosen)} | {np.mean(held):.1%} ({min(held):.1%} - "
                     f"{max(held):.1%}) | {by_fifth} | "
                     f"{sum(bool(i['size_power']) for i in chosen)} / "
                     f"{sum(bool(i['scaled']) for i in chosen)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2]
                        / "shared" / "data" / "manhattan",
                        help="Manhattan's benchmark folder (skipped when it does not exist)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run_study(args.data if args.data.is_dir() else None)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(table(rows))
    print()
    print(interval_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
