"""Run the benchmarks and write docs/benchmarks.md.

    python -m bench.run --quick|--full [--data DIR] [--tasks a,b] [--out docs]
                        [--parts quality,versus,real,flags,epochs,srel,sweep,prompts,writeback,demo]
                        [--device cpu]

Parts not run this time are read back from their earlier result files in OUT/bench/, so the
document always shows every table; each table says when it was measured.

Another city's folder (`--data`, not the bundled Manhattan) is evaluated with that city's
split from the literature (`engine.data.benchmark.benchmark_split`: Chicago 25 shuffled folds,
San Francisco 10 shuffled, regions without check-ins left out of check-in there; any other
city 10 shuffled folds), runs only the parts that read the folder (quality, versus, epochs,
srel, prompts), and writes into out/bench/<folder name>/ unless `--out` says otherwise, so
the project's own docs/benchmarks.md stays Manhattan's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.env import REPO, calibration, environment
from bench.quality import MANHATTAN, MANHATTAN_LITERATURE_CLUSTERS, QualitySettings, run_quality
from bench.report import cpu_features_text, prompt_summary

PARTS = ("quality", "versus", "real", "flags", "epochs", "srel", "sweep", "prompts", "writeback",
         "demo")
DATA_PARTS = ("quality", "versus", "epochs", "srel", "prompts")  # the parts that read --data
FULL_ONLY = ("writeback", "demo")  # parts that need QGIS and minutes: only with --full
QGIS_PYTHON = REPO / ".venv-qgis" / "bin" / "python"
QUICK_NOTE = ("Quick mode: 1 seed (no std); the prompt ablations, gradient boosting and the "
              "paper protocol on the first task only (the baselines, SREL -> Ridge and the "
              "engine default on every task); no SREL "
              "ablations (each is another 2000-epoch training); no Prompt4RE-head rows (minutes "
              "per task on this CPU; measured on a GPU in docs/bench/prompt4re-manhattan-cuda.json). "
              "`make bench-full` runs 3 seeds and every row on every task.")


def is_other_city(data: Path) -> bool:
    """Whether `data` is another folder than the bundled Manhattan benchmark."""
    return Path(data).expanduser().resolve() != MANHATTAN.resolve()


def default_parts(full: bool, data: Path) -> list[str]:
    """The parts a run makes when none are named: all (QGIS ones only in full mode); for another
    city's folder only those that read it (the sweep, the real places, write-back and demo
    do not)."""
    return [p for p in PARTS if (full or p not in FULL_ONLY)
            and (p in DATA_PARTS or not is_other_city(data))]


def output_folder(data: Path, out: str | None) -> Path:
    """Where benchmarks.md and bench/ go: `out`, else docs/ for Manhattan and
    out/bench/<folder name>/ for another city (docs/benchmarks.md stays Manhattan's)."""
    if out:
        return Path(out)
    if is_other_city(data):
        return REPO / "out" / "bench" / Path(data).expanduser().resolve().name
    return REPO / "docs"


def quality_settings(full: bool, tasks: list[str] | None, device: str,
                     seeds: tuple[int, ...] | None = None,
                     srel_ablations: bool = False) -> QualitySettings:
    if not full and (seeds or srel_ablations):  # quick, with more seeds or the SREL ablations
        quick = quality_settings(False, tasks, device)
        quick.seeds = seeds or quick.seeds
        quick.srel_ablations = srel_ablations
        return quick
    if full:
        return QualitySettings(seeds=(0, 1, 2), tasks=tuple(tasks) if tasks else None,
                               device=device)
    ablation_tasks = (tasks[0],) if tasks else ("crime",)
    return QualitySettings(seeds=(0,), tasks=tuple(tasks) if tasks else None,
                           ablation_tasks=ablation_tasks, device=device, prompt4re_epochs=1000,
                           gbm_all_tasks=False, srel_ablations=False, method_all_tasks=True,
                           prompt4re_rows=False)


def sweep_options(full: bool, device: str) -> dict:
    from bench.sweep import FULL_SIZES, GPU_SIZES, QUICK_SIZES

    if device.startswith("cuda"):
        return {"sizes": list(GPU_SIZES), "srel_epochs": "schedule", "encode_model": "smollm2",
                "encode_max": 10000, "predict": True}
    if full:
        return {"sizes": list(FULL_SIZES), "srel_epochs": "schedule", "encode_model": "smollm2",
                "encode_max": 10000, "predict": True}
    return {"sizes": list(QUICK_SIZES), "srel_epochs": "20", "encode_model": "none",
            "encode_max": 0, "predict": True, "predict_max": 1000}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=float))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def quality_csv(quality: dict, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "protocol", "model", "label", "mae", "mae_std", "rmse",
                         "rmse_std", "r2", "r2_std", "runs", "optimistic"])
        for r in quality["rows"]:
            writer.writerow([r["task"], r["protocol"], r["model"], r["label"].strip(),
                             r.get("mae"), r.get("mae_std"), r.get("rmse"), r.get("rmse_std"),
                             r.get("r2"), r.get("r2_std"), r["runs"], r["optimistic"]])


def merge_quality(old: dict | None, new: dict) -> dict:
    """`new`'s tasks replace those tasks' rows in `old`; `old`'s other tasks stay, so a long
    full-mode run can be done a few tasks at a time. Each task keeps a record of the run it
    comes from (`task_runs`): mode, seeds, date, commit and, for quick runs, what they leave out.
    Refuses to mix results of different data folders or fold settings."""
    def runs_of(result: dict) -> dict:
        if result.get("task_runs"):
            return dict(result["task_runs"])
        env = result.get("environment", {})
        run = {"mode": result.get("mode", "quick" if result.get("quick_note") else "full"),
               "seeds": list(result["settings"]["seeds"]), "date": env.get("date"),
               "commit": env.get("git_commit"), "note": result.get("quick_note"),
               "cpu": env.get("cpu"), "cpu_count": env.get("cpu_count"),
               "language_model_dtype": result.get("language_model_dtype")}
        if result.get("run_note"):  # --note: what else ran on the machine, say
            run["run_note"] = result["run_note"]
        return {task: run for task in result["tasks"]}

    if old is None or not old.get("rows"):
        return {**new, "task_runs": runs_of(new)}
    same = ("data", "regions")
    settings = ("folds", "shuffle", "srel_epochs", "language_model")
    if (any(old.get(k) != new.get(k) for k in same)
            or any(old["settings"].get(k) != new["settings"].get(k) for k in settings)):
        raise SystemExit("bench: --keep-other-tasks needs the earlier quality.json to be of the "
                         "same data and fold settings; run without it to start afresh")
    replaced = set(new["tasks"])
    merged = dict(new)
    merged["tasks"] = list(dict.fromkeys(old["tasks"] + new["tasks"]))  # the earlier order
    merged["rows"] = ([r for r in old["rows"] if r["task"] not in replaced] + new["rows"])
    merged["labelled"] = {**old.get("labelled", {}), **new.get("labelled", {})}
    merged["missing_tasks"] = sorted(set(old.get("missing_tasks", []))
                                     & set(new.get("missing_tasks", [])))
    merged["task_runs"] = {**runs_of(old), **runs_of(new)}
    merged.pop("quick_note", None)
    return merged


def run_prompts(full: bool, data: Path, device: str, log, city: str | None = None) -> dict:
    from bench.prompts import prompt_throughput
    from engine.data.benchmark import load_benchmark_folder

    dataset = load_benchmark_folder(data, city=city)
    target = "crime" if "crime" in dataset.targets else next(iter(dataset.targets), "crime")
    regions, no_reuse = (None, 48) if full else (32, 8)
    log(f"prompts: smollm2 on {regions or dataset.n_regions} regions ...")
    result = prompt_throughput(dataset, target, model="smollm2", device=device,
                               regions=regions, no_reuse_regions=no_reuse)
    result["data"] = str(data)
    others = []
    for model in ("minilm",):
        try:
            other = prompt_throughput(dataset, target, model=model, device=device,
                                      regions=regions if full else 32)
            others.append(other)
        except Exception as error:  # noqa: BLE001 - reported, not raised
            others.append({"model": model, "skipped": str(error)})
    result["others"] = [o for o in others if "reuse" in o]
    return result


SREL_RUNS_KEPT = 8  # earlier SREL timings kept beside the latest, to show the hour-to-hour spread


def run_srel_timing(data: Path, device: str, runs: int, log, epochs: int | None = None,
                    city: str | None = None) -> dict:
    """SREL as the engine trains it on `data` (its schedule: 2000 full-batch epochs on
    Manhattan; `epochs` overrides it), `runs` times with seeds 0, 1, ...: wall and CPU
    seconds of each. The goal's figure is the fastest run."""
    import torch

    from engine.data.benchmark import load_benchmark_folder
    from engine.models.modeling_srel import SRELConfig
    from engine.training.train_srel import fit_srel

    dataset = load_benchmark_folder(data, city=city)
    config = SRELConfig(epochs=epochs)
    rows = []
    for seed in range(runs):
        log(f"srel: {data.name} seed {seed} ...")
        cpu_start = time.process_time()
        result = fit_srel(dataset, config, device=device, seed=seed)
        rows.append({"seed": seed, "epochs": result.epochs, "seconds": result.seconds,
                     "cpu_seconds": time.process_time() - cpu_start,
                     "final_loss": result.losses[-1] if result.losses else None})
        log(f"srel: seed {seed}: {result.epochs} epochs in {result.seconds:.1f} s")
    return {"data": str(data), "n_regions": dataset.n_regions, "device": device,
            "threads": torch.get_num_threads(), "runs": rows}


def srel_history(old: dict | None, new: dict) -> list[dict]:
    """The earlier runs' summaries (newest first, at most SREL_RUNS_KEPT) for `new`'s file."""
    if not old or "runs" not in old:
        return []
    env = old.get("environment") or {}
    latest = {"date": env.get("date"), "git_commit": env.get("git_commit"),
              "cpu": env.get("cpu"), "cpu_count": env.get("cpu_count"),
              "calibration": env.get("calibration"), "threads": old.get("threads"),
              "fastest_seconds": min(r["seconds"] for r in old["runs"]),
              "runs": len(old["runs"]), "data": old.get("data")}
    same = [h for h in old.get("history", []) if h.get("data") == new.get("data")]
    return ([latest] if latest["data"] == new.get("data") else []) + same[:SREL_RUNS_KEPT - 1]


def other_cpu_runs(old: dict | None, new: dict) -> list[dict]:
    """The latest prompt benchmark of every other kind of CPU (name, cores, features, dtype) seen
    in earlier runs: the figure depends on the CPU, and the reference machine has varied."""
    if not old or "reuse" not in old:
        return list((old or {}).get("other_cpus", []))
    def kind(summary: dict) -> tuple:
        return (summary.get("cpu"), summary.get("cpu_count"),
                tuple(summary.get("cpu_features") or ()), summary.get("dtype"))

    kept = {}
    for summary in [*old.get("other_cpus", []), prompt_summary(old)]:
        kept[kind(summary)] = summary  # later runs of the same kind replace earlier ones
    kept.pop(kind(prompt_summary(new)), None)
    return list(kept.values())


def run_writeback(out: Path, full: bool, log) -> dict | None:
    if not QGIS_PYTHON.exists():
        return {"skipped": f"QGIS's Python ({QGIS_PYTHON}) is not installed (make setup-qgis)"}
    log("writeback: QGIS ...")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([str(QGIS_PYTHON), str(REPO / "bench" / "writeback_qgis.py"),
                           "--regions", "10000", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"skipped": f"bench/writeback_qgis.py failed: {done.stderr[-500:]}"}
    return _read(out / "writeback-qgis.json")


def run_demo(log) -> dict:
    """`make demo` (scripts/demo.sh) as a user runs it after set-up: a fresh output folder and
    an empty vector cache (the converted language models are set-up, so they are linked in),
    timed from start to the printed table."""
    if not QGIS_PYTHON.exists():
        return {"skipped": f"QGIS's Python ({QGIS_PYTHON}) is not installed (make setup-qgis)"}
    import tempfile

    from engine.language.models import default_cache_dir

    log("demo: scripts/demo.sh with an empty vector cache ...")
    with tempfile.TemporaryDirectory(prefix="topt-demo-") as scratch:
        cache = Path(scratch) / "cache"
        cache.mkdir()
        models = default_cache_dir() / "models"
        if models.is_dir():
            (cache / "models").symlink_to(models, target_is_directory=True)
        out = Path(scratch) / "demo"
        env = {**os.environ, "TOPT_CACHE_DIR": str(cache),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        start = time.perf_counter()
        done = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), str(out)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            return {"skipped": f"scripts/demo.sh failed: {done.stderr[-800:]}"}
        metrics = next((json.loads(m.read_text()) for m in (out / "model" / "metrics.json",
                        out / "engine" / "metrics.json") if m.exists()), {})
    return {"seconds": seconds, "through_qgis": "through QGIS" in done.stdout,
            "threads": env["OMP_NUM_THREADS"], "timings": metrics.get("timings", {}),
            "r2": {task: scores["methods"] for task, scores in metrics.get("tasks", {}).items()},
            "clustering": metrics.get("clustering", {}), "table": done.stdout[-6000:]}


def _merged_sweeps(bench_dir: Path, device: str) -> dict | None:
    """sweep-<device>.json, with the rows of later runs (sweep-<device>?*.json, e.g. one size
    re-run after a fix or with the prompts encoded) merged in: a successful row replaces the
    row of the same N when that row failed or was measured before it; it names its file, and
    the file's "note" (what else ran on the machine, say) when it has one. "end_to_end" keeps,
    per N, the latest row with its prompt vectors encoded (a later SREL-only run replaces the
    row of the table, not the end-to-end figure)."""
    base = _read(bench_dir / f"sweep-{device}.json")
    if base is None:
        return None
    base_date = base.get("environment", {}).get("date") or ""
    rows = {r["n_regions"]: r for r in base["rows"]}
    end_to_end = {n: r for n, r in rows.items() if _encoded(r)}
    for path in sorted(bench_dir.glob(f"sweep-{device}?*.json")):
        extra = _read(path) or {}
        env = extra.get("environment", {})
        date = env.get("date") or ""
        machine = env.get("gpu") or f"CPU features {cpu_features_text(env)}"
        for row in extra.get("rows", []):
            old = rows.get(row["n_regions"])
            if row.get("failed"):
                continue
            note = f"; {extra['note']}" if extra.get("note") else ""
            row["source"] = f"{path.name} ({date}; {machine}{note})"
            row["date"] = date
            if old is None or old.get("failed") or date > (old.get("date") or base_date):
                rows[row["n_regions"]] = row
            kept = end_to_end.get(row["n_regions"])
            if _encoded(row) and (kept is None or date > (kept.get("date") or base_date)):
                end_to_end[row["n_regions"]] = row
    base["rows"] = [rows[n] for n in sorted(rows)]
    base["end_to_end"] = {n: end_to_end[n] for n in sorted(end_to_end)}
    return base


def _encoded(row: dict) -> bool:
    """A sweep row with its prompt vectors encoded (an end-to-end row)."""
    return not row.get("failed") and "seconds" in (row.get("encode") or {})


def render_document(results: dict, out_docs: Path) -> Path:
    from bench.plots import scaling_plot
    from bench.report import render

    bench_dir = out_docs / "bench"
    sweeps = {k.split("_")[1]: results[k] for k in ("sweep_cpu", "sweep_cuda") if results.get(k)}
    plot = None
    if sweeps:
        threshold = next((r["srel"]["dense_threshold"] for s in sweeps.values()
                          for r in s["rows"] if "srel" in r), None)
        scaling_plot(sweeps, bench_dir / "scaling.png", threshold)
        plot = "bench/scaling.png"
    document = out_docs / "benchmarks.md"
    document.write_text(render(results, bench_dir, plot))
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="1 seed, fewer ablations and sizes")
    mode.add_argument("--full", action="store_true", help="3 seeds, everything, N = 10,000")
    parser.add_argument("--data", default=str(MANHATTAN),
                        help="benchmark folder in the literature's layout (default: Manhattan)")
    parser.add_argument("--tasks", default=None, help="comma-separated targets (default: all five)")
    parser.add_argument("--out", default=None,
                        help="where benchmarks.md goes (default: docs/ for Manhattan, "
                        "out/bench/<folder name>/ for another city's folder)")
    parser.add_argument("--city", default=None,
                        help="the --data folder's city, whose literature split is used: "
                        "manhattan, chicago, san_francisco or other (default: from the "
                        "folder's name)")
    parser.add_argument("--folds", type=int, default=None,
                        help="outer folds (default: the city's literature split)")
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                        help="shuffle before folding, seed 2024 (default: the city's split)")
    parser.add_argument("--parts", default=None,
                        help=f"comma-separated parts to run now, of {', '.join(PARTS)} "
                        "(default: all; writeback and demo only with --full; 'none': only "
                        "render the document from the existing result files)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seeds", default=None,
                        help="quick mode with these seeds, e.g. 0,1,2 (mean and std over them)")
    parser.add_argument("--srel-ablations", action="store_true",
                        help="quick mode with the SREL ablations (no distance bias, no centrality)")
    parser.add_argument("--keep-other-tasks", action="store_true",
                        help="with --tasks: replace only these tasks' rows in the existing "
                        "quality.json, keeping the other tasks' rows and saying which run each "
                        "task comes from (a full run a few tasks at a time)")
    parser.add_argument("--clusters", type=int, default=None,
                        help="KMeans k of the published clustering figures, reported beside k = "
                        "the classes present (default: 12 on the bundled Manhattan, as published)")
    parser.add_argument("--note", default=None,
                        help="a sentence about this run shown under the mode line (e.g. how busy)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    from engine.data.benchmark import benchmark_split

    full = bool(args.full)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    data = Path(args.data)
    split = benchmark_split(data, args.city)
    folds = args.folds or split.folds
    shuffle = split.shuffle if args.shuffle is None else bool(args.shuffle)
    parts = args.parts.split(",") if args.parts else default_parts(full, data)
    if parts == ["none"]:
        parts = []  # render the document from the result files already there
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}")
    out_docs = output_folder(data, args.out)
    bench_dir = out_docs / "bench"

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    results: dict = {"mode": "full" if full else "quick", "environment": environment(args.device),
                     "note": args.note, "parts": list(parts)}
    started = time.perf_counter()
    if "quality" in parts:
        log(f"quality on {data} ...")
        seeds = tuple(int(x) for x in args.seeds.split(",")) if args.seeds else None
        settings = quality_settings(full, tasks, args.device, seeds, args.srel_ablations)
        settings.folds, settings.shuffle, settings.city = folds, shuffle, args.city
        chosen = ("" if (folds, shuffle) == (split.folds, split.shuffle) else
                  f"{folds} folds {'shuffled' if shuffle else 'without shuffle'}, as asked; "
                  "the city's: ")
        log(f"split: {chosen}{split.describe()}")
        settings.literature_clusters = args.clusters or (
            MANHATTAN_LITERATURE_CLUSTERS if not is_other_city(data) else None)
        before = calibration()
        quality = run_quality(data, settings, log=log)
        quality["environment"] = environment(args.device, before=before)
        quality["mode"] = "full" if full else "quick"
        if args.note:
            quality["run_note"] = args.note
        if not full:
            quality["quick_note"] = QUICK_NOTE
            if seeds or args.srel_ablations:
                quality["quick_note"] += (f" This run: seeds {list(settings.seeds)}"
                                          + (", with the SREL ablations on the first task."
                                             if args.srel_ablations else "."))
        if args.keep_other_tasks:
            quality = merge_quality(_read(bench_dir / "quality.json"), quality)
        _write(bench_dir / "quality.json", quality)
        quality_csv(quality, bench_dir / "quality.csv")
    if "versus" in parts:
        from bench.versus import run_versus

        log(f"versus: the default against the bar, paired, on {data} ...")
        before = calibration()
        versus = run_versus(data, seeds=(0, 1, 2) if full else (0,),
                            tasks=tuple(tasks) if tasks else None, device=args.device, log=log,
                            folds=folds, literature_shuffle=shuffle, city=args.city)
        versus["mode"] = "full" if full else "quick"
        versus["environment"] = environment(args.device, before=before)
        _write(bench_dir / "versus.json", versus)
    if "real" in parts:
        from bench.real_places import run_real_places

        log("real: the default against the bar on real places outside the repository ...")
        before = calibration()
        # Three seeds in quick mode too: about a minute, and a quick `make bench` then keeps
        # the published rows instead of overwriting them with one seed.
        real = run_real_places(seeds=(0, 1, 2), device=args.device, log=log)
        real["mode"] = "full"
        real["environment"] = environment(args.device, before=before)
        _write(bench_dir / "real-places.json", real)
    if "flags" in parts:
        from bench.extrapolation_study import run_study

        log("flags: what the extrapolation flags mark (Manhattan, real places, 77-region cities) ...")
        before = calibration()
        flags = {"rows": run_study(MANHATTAN if MANHATTAN.is_dir() else None, log=log),
                 "mode": "full", "environment": environment(args.device, before=before)}
        _write(bench_dir / "extrapolation-flags.json", flags)
    if "epochs" in parts:
        from bench.srel_epochs import epoch_plot, run_srel_epochs

        log(f"epochs: SREL snapshots on {data} ...")
        before = calibration()
        epochs = run_srel_epochs(data, seeds=(0, 1, 2) if full else (0,),
                                 tasks=tuple(tasks) if tasks else None, device=args.device,
                                 log=log, folds=folds, shuffle=shuffle, city=args.city)
        epochs["mode"] = "full" if full else "quick"
        epochs["environment"] = environment(args.device, before=before)
        _write(bench_dir / "srel-epochs.json", epochs)
        epoch_plot(epochs, bench_dir / "srel-epochs.png")
    if "srel" in parts:
        before = calibration()
        srel = run_srel_timing(data, args.device, 3 if full else 1, log, city=args.city)
        srel["mode"] = "full" if full else "quick"
        srel["environment"] = environment(args.device, before=before)
        srel["history"] = srel_history(_read(bench_dir / "srel-timing.json"), srel)
        _write(bench_dir / "srel-timing.json", srel)
    if "prompts" in parts:
        before = calibration()
        prompts = run_prompts(full, data, args.device, log, city=args.city)
        prompts["mode"] = "full" if full else "quick"
        prompts["environment"] = environment(args.device, before=before)
        prompts["other_cpus"] = other_cpu_runs(_read(bench_dir / "prompts.json"), prompts)
        _write(bench_dir / "prompts.json", prompts)
    if "sweep" in parts:
        from bench.sweep import run_sweep

        run_sweep(out=bench_dir, device=args.device, log=log,
                  **sweep_options(full, args.device))
    if "writeback" in parts:
        writeback = run_writeback(bench_dir, full, log)
        if writeback and "skipped" in writeback:
            _write(bench_dir / "writeback-qgis.json", writeback)
    if "demo" in parts:
        before = calibration()
        demo = run_demo(log)
        demo["environment"] = environment(args.device, before=before)
        _write(bench_dir / "demo.json", demo)
    results["quality"] = _read(bench_dir / "quality.json")
    results["quality_checks"] = [{**(_read(path) or {}), "file": path.name}
                                 for path in sorted(bench_dir.glob("quality-check-*.json"))]
    results["versus"] = _read(bench_dir / "versus.json")
    results["real_places"] = _read(bench_dir / "real-places.json")
    results["extrapolation_flags"] = _read(bench_dir / "extrapolation-flags.json")
    results["srel_epochs"] = _read(bench_dir / "srel-epochs.json")
    if (bench_dir / "srel-epochs.png").exists():
        results["srel_epochs_plot"] = "bench/srel-epochs.png"
    results["srel"] = _read(bench_dir / "srel-timing.json")
    results["prompts"] = _read(bench_dir / "prompts.json")
    results["sweep_cpu"] = _merged_sweeps(bench_dir, "cpu")
    results["sweep_cuda"] = _merged_sweeps(bench_dir, "cuda")
    results["writeback"] = _read(bench_dir / "writeback-qgis.json")
    results["demo"] = _read(bench_dir / "demo.json")
    results["seconds"] = time.perf_counter() - started
    document = render_document(results, out_docs)
    log(f"wrote {document} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
