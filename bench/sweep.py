"""Speed and memory as cities grow: SREL epochs and training, prompt encoding, prediction.

Each city size runs in a fresh subprocess, so its peak memory (VmHWM; on CUDA also
`torch.cuda.max_memory_allocated`) belongs to that size alone. Nothing is extrapolated: every
figure is a measurement of what ran, with the epochs that ran.

Self-contained: it needs the engine's SREL (torch, numpy, scipy, torch-geometric) and
scikit-learn; the synthetic city comes from `engine.data.synthetic` when it imports (shapely,
geopandas), else from a numpy-only generator below. Prompt encoding and the engine's predictor
run when they import and their models are installed; otherwise the row says why they did not.

    python -m bench.sweep --device cuda --sizes 180,1000,5000,10000,50000,100000 --out DIR

writes DIR/sweep-cuda.json (DIR/sweep-cpu.json on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.env import calibration, environment, git_commit, peak_rss_bytes

QUICK_SIZES = (180, 1000, 2000, 5000)
FULL_SIZES = (180, 1000, 2000, 5000, 10000)
GPU_SIZES = (180, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


# ---------------------------------------------------------------------------------------------
# The city


def synthetic_city(n: int, seed: int = 0):
    """A RegionDataset of n regions: the engine's generator if it imports, else a numpy one."""
    try:
        from engine.data.synthetic import make_synthetic_city
    except ImportError:
        return _numpy_city(n, seed), "bench.sweep numpy generator"
    try:
        return make_synthetic_city(n, seed=seed), "engine.data.synthetic"
    except ImportError:  # shapely or geopandas missing on this machine
        return _numpy_city(n, seed), "bench.sweep numpy generator"


def _numpy_city(n: int, seed: int = 0, k: int = 16, trips_per_region: int = 20,
                buckets: int = 16):
    """Jittered-grid regions with POI and land-use counts, gravity-like trips and a target.

    No N x N dense array is made: trips go mostly to near neighbours (70%) and otherwise
    anywhere. The target depends on POIs, trips and position, plus noise.
    """
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    from engine.data.dataset import RegionDataset, SpatialPriors, View

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    grid = np.array([(i % side, i // side) for i in range(n)], dtype=np.float64)
    centroids = grid * 300.0 + rng.normal(0, 30, size=(n, 2)) + np.array([580_000, 4_500_000])
    tree = cKDTree(centroids)
    k = min(k, n - 1)
    distance, neighbours = tree.query(centroids, k=k + 1)
    adjacency = sp.csr_matrix(tree.sparse_distance_matrix(tree, 1.5 * 300.0,
                                                          output_type="coo_matrix"))
    adjacency.data[:] = 1.0
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    origins = np.repeat(np.arange(n), trips_per_region)
    destinations = np.where(rng.random(len(origins)) < 0.7,
                            neighbours[origins, rng.integers(1, k + 1, len(origins))],
                            rng.integers(0, n, len(origins)))
    flow = sp.csr_matrix((rng.poisson(4.0, len(origins)) + 1.0, (origins, destinations)),
                         shape=(n, n))
    intensity = rng.gamma(2.0, 2.0, size=(n, 1))
    poi = rng.poisson(intensity * np.ones((1, 26))).astype(np.float64)
    landuse = rng.poisson(2.0, size=(n, 11)).astype(np.float64)
    a, b = rng.integers(0, n, 200_000), rng.integers(0, n, 200_000)
    pair = np.sqrt(((centroids[a] - centroids[b]) ** 2).sum(-1))
    out_total = np.asarray(flow.sum(axis=1)).ravel()
    in_total = np.asarray(flow.sum(axis=0)).ravel()
    priors = SpatialPriors(
        centroids=centroids, crs="EPSG:32618", adjacency=adjacency,
        neighbours=neighbours[:, 1:].astype(np.int64), neighbour_distance=distance[:, 1:],
        degree=np.asarray(adjacency.sum(axis=1)).ravel().astype(np.int64),
        mobility_out=out_total, mobility_in=in_total,
        distance_quantiles=np.quantile(pair, np.linspace(0, 1, buckets + 1)[1:-1]),
        area=np.full(n, 300.0 * 300.0),
    )
    views = {"poi": View("poi", "counts", poi, [f"poi_{i:02d}" for i in range(26)]),
             "landuse": View("landuse", "counts", landuse, [f"lu_{i:02d}" for i in range(11)]),
             "mobility": View("mobility", "flow", flow, [str(i) for i in range(n)])}
    centre = centroids.mean(0)
    radial = np.sqrt(((centroids - centre) ** 2).sum(1)) / (side * 300.0)
    crime = (5 * poi.sum(1) ** 0.8 + 0.2 * in_total ** 0.9 + 50 * (1 - radial)
             + rng.normal(0, 10, n)).clip(0)
    return RegionDataset(region_ids=np.arange(n), views=views, priors=priors,
                         targets={"crime": crime},
                         classes={"landuse": landuse.argmax(1).astype(str)},
                         source={"synthetic": f"bench.sweep n={n} seed={seed}"})


# ---------------------------------------------------------------------------------------------
# One size, in its own process


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _gpu_peak(device: str) -> int | None:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated())
    return None


def measure_size(n: int, *, device: str, srel_epochs: str, encode_model: str,
                 encode_max: int, predict: bool, predict_max: int = 10**9,
                 seed: int = 0) -> dict:
    """Every figure for one city size (run in a fresh process: its peak memory is its own)."""
    import torch

    from engine.models.modeling_srel import SRELConfig, schedule_epochs
    from engine.training.train_srel import fit_srel

    row: dict = {"n_regions": n, "device": device, "seed": seed,
                 "baseline_rss_bytes": peak_rss_bytes()}
    start = time.perf_counter()
    dataset, generator = synthetic_city(n, seed)
    row["city_seconds"] = time.perf_counter() - start
    row["city_generator"] = generator
    row["after_city_rss_bytes"] = peak_rss_bytes()

    base = SRELConfig()
    epochs = schedule_epochs(n, base) if srel_epochs == "schedule" else int(srel_epochs)
    config = SRELConfig(epochs=epochs)
    row["srel"] = {"epochs": epochs, "schedule_epochs": schedule_epochs(n, base),
                   "dense_threshold": config.dense_threshold,
                   "path": "dense" if n <= config.dense_threshold else "sparse"}
    stamps: list[tuple[float, float]] = []  # (fraction done, time)

    def progress(fraction: float, message: str = "") -> None:
        _sync(device)
        stamps.append((fraction, time.perf_counter()))

    _sync(device)
    start = time.perf_counter()
    result = fit_srel(dataset, config, device=device, seed=seed, progress=progress)
    _sync(device)
    row["srel"]["seconds"] = time.perf_counter() - start
    if len(stamps) >= 2 and stamps[-1][0] > stamps[0][0]:
        done = (stamps[-1][0] - stamps[0][0]) * epochs
        row["srel"]["seconds_per_epoch"] = (stamps[-1][1] - stamps[0][1]) / done
    elif epochs:
        row["srel"]["seconds_per_epoch"] = row["srel"]["seconds"] / epochs
    row["srel"]["final_loss"] = float(result.losses[-1]) if result.losses else None
    row["srel"]["notes"] = list(result.notes)
    row["after_srel_rss_bytes"] = peak_rss_bytes()
    row["srel"]["gpu_peak_bytes"] = _gpu_peak(device)
    embeddings = result.embeddings
    del result

    semantic = None
    if encode_model != "none" and n <= encode_max:
        try:
            from engine.language.encode import encode_regions

            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                semantic = encode_regions(dataset, "crime", model=encode_model, cache_dir=cache,
                                          device=device)
                seconds = time.perf_counter() - start
            row["encode"] = {"model": encode_model, "seconds": seconds,
                             "regions_per_second": n / seconds,
                             "note": "includes loading the model (a fresh process)"}
        except Exception as error:  # noqa: BLE001 - reported in the result, not raised
            row["encode"] = {"model": encode_model, "skipped": f"{type(error).__name__}: {error}"}
    else:
        row["encode"] = {"model": encode_model,
                         "skipped": "not asked" if encode_model == "none"
                         else f"N > encode limit {encode_max}"}
    row["after_encode_rss_bytes"] = peak_rss_bytes()

    if predict and n > predict_max:
        row["predict"] = {"skipped": f"N > prediction limit {predict_max}"}
    elif predict:
        try:
            row["predict"] = _time_prediction(dataset, embeddings, semantic, device, seed)
        except Exception as error:  # noqa: BLE001 - reported in the result, not raised
            row["predict"] = {"skipped": f"{type(error).__name__}: {error}"}
    row["peak_rss_bytes"] = peak_rss_bytes()
    row["gpu_peak_bytes"] = _gpu_peak(device)
    row["torch_threads"] = torch.get_num_threads()
    return row


def _time_prediction(dataset, embeddings, semantic, device: str, seed: int) -> dict:
    """Fit the engine's default per-task model on 80% of the regions, predict all of them."""
    y = np.asarray(dataset.targets["crime"], dtype=np.float64)
    rng = np.random.default_rng(seed)
    train = np.sort(rng.permutation(len(y))[: int(0.8 * len(y))])
    test = np.setdiff1d(np.arange(len(y)), train)
    visible = np.full_like(y, np.nan)
    visible[train] = y[train]
    _sync(device)
    start = time.perf_counter()
    try:
        from engine.training.predictor import benchmark_fit_predict
    except ImportError:
        benchmark_fit_predict = None
    if benchmark_fit_predict is not None:
        predictions = benchmark_fit_predict(dataset, embeddings, semantic, visible, train, test,
                                            device=device, seed=seed)
        model = "engine.training.predictor"
    else:
        from engine.training.train_prompt4re import fit_prompt4re

        sem = semantic if semantic is not None else np.zeros((len(y), 1), np.float32)
        fitted = fit_prompt4re(embeddings, sem, visible, train, epochs=300, device=device,
                               seed=seed)
        predictions = fitted.predict(test)
        model = "Prompt4RE (clean, up to 300 epochs; the predictor module was not there)"
    _sync(device)
    seconds = time.perf_counter() - start
    residual = ((np.asarray(predictions) - y[test]) ** 2).sum()
    r2 = 1 - residual / ((y[test] - y[test].mean()) ** 2).sum()
    return {"model": model, "seconds": seconds, "held_out_r2": float(r2)}


# ---------------------------------------------------------------------------------------------
# The sweep: one subprocess per size


def run_sweep(sizes: list[int], *, device: str, srel_epochs: str, encode_model: str,
              encode_max: int, predict: bool, out: Path, predict_max: int = 10**9,
              timeout: float = 3600, log=print) -> dict:
    """Measure every size in a fresh subprocess; write and return out/sweep-<device>.json.

    The machine check is taken before the first size and after the last, and the commit both
    when the sweep starts and when it ends (an hour-long size may outlive a commit)."""
    started_at = git_commit()
    before = calibration()
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "row.json"
            command = [sys.executable, "-m", "bench.sweep", "--child", str(n), "--device", device,
                       "--srel-epochs", srel_epochs, "--encode", encode_model,
                       "--encode-max", str(encode_max), "--predict-max", str(predict_max),
                       "--row-out", str(target)]
            if not predict:
                command.append("--no-predict")
            log(f"sweep: N={n} on {device} ...")
            start = time.perf_counter()
            try:
                done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent,
                                      capture_output=True, text=True, timeout=timeout)
                failed = done.returncode != 0 or not target.exists()
                error = done.stderr[-2000:] if failed else None
            except subprocess.TimeoutExpired:
                failed, error = True, f"timed out after {timeout:.0f} s"
            wall = time.perf_counter() - start
            if failed:
                row = {"n_regions": n, "device": device, "failed": error}
            else:
                row = json.loads(target.read_text())
            row["process_seconds"] = wall
            rows.append(row)
            log(f"sweep: N={n} done in {wall:.1f} s" + (" (FAILED)" if failed else ""))
    env = environment(device, before=before)
    if started_at != env.get("git_commit"):
        env["git_commit_at_start"] = started_at
    result = {"environment": env,
              "settings": {"sizes": sizes, "srel_epochs": srel_epochs, "encode": encode_model,
                           "encode_max": encode_max, "predict": predict,
                           "predict_max": predict_max},
              "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sweep-{'cuda' if device.startswith('cuda') else 'cpu'}.json"
    path.write_text(json.dumps(result, indent=1))
    return result


def memory_exponent(rows: list[dict], threshold: int, key: str = "peak_rss_bytes",
                    minus: str | None = None) -> dict | None:
    """Least-squares slope of log(memory) on log(N) over the sizes above `threshold`.

    With `minus`, the memory of each process before the city was built is subtracted first
    (the interpreter and libraries, which do not grow with N).
    """
    points = []
    for row in rows:
        if row.get("failed") or row["n_regions"] <= threshold or row.get(key) is None:
            continue
        value = row[key] - (row.get(minus) or 0 if minus else 0)
        if value > 0:
            points.append((row["n_regions"], value))
    if len(points) < 2:
        return None
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    slope = float(np.polyfit(x, y, 1)[0])
    return {"exponent": slope, "sizes": [p[0] for p in points]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=None,
                        help="comma-separated region counts (default: CPU full sizes, or up to "
                        "100,000 on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--srel-epochs", default="schedule",
                        help="'schedule' (the engine's fixed schedule) or a number")
    parser.add_argument("--encode", default="smollm2",
                        help="language model for the prompt-encoding timing, or none")
    parser.add_argument("--encode-max", type=int, default=10000,
                        help="encode prompts only up to this many regions")
    parser.add_argument("--no-predict", action="store_true", help="skip the prediction timing")
    parser.add_argument("--predict-max", type=int, default=10**9,
                        help="time the prediction only up to this many regions")
    parser.add_argument("--out", default="docs/bench", help="folder for sweep-<device>.json")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per size")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--row-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        row = measure_size(args.child, device=args.device, srel_epochs=args.srel_epochs,
                           encode_model=args.encode, encode_max=args.encode_max,
                           predict=not args.no_predict, predict_max=args.predict_max)
        Path(args.row_out).write_text(json.dumps(row, default=float))
        return 0
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = list(GPU_SIZES if args.device.startswith("cuda") else FULL_SIZES)
    result = run_sweep(sizes, device=args.device, srel_epochs=args.srel_epochs,
                       encode_model=args.encode, encode_max=args.encode_max,
                       predict=not args.no_predict, predict_max=args.predict_max,
                       out=Path(args.out), timeout=args.timeout,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    for row in result["rows"]:
        print(json.dumps({k: row.get(k) for k in ("n_regions", "process_seconds",
                                                   "peak_rss_bytes", "gpu_peak_bytes")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
