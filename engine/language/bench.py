"""Prompt-encoding throughput: regions per second, with and without prefix reuse.

    python -m engine.language.bench --data ../shared/data/manhattan [--model smollm2]

Builds the 180 Manhattan region descriptions (POI, land use, trips, centroid, area), the crime
task prompt, and times `LanguageModel.encode` (no disk cache). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from engine.data.dataset import RegionDataset, SpatialPriors, View
from engine.language.describe import describe_regions
from engine.language.models import load_language_model
from engine.language.templates import task_template


def manhattan_dataset(folder: Path) -> RegionDataset:
    """The benchmark folder's views and the shapefile's centroids and areas (no targets)."""
    import geopandas as gpd

    regions = gpd.read_file(folder / "mh-180.shp").sort_values("region_id")
    projected = regions.geometry.to_crs(regions.geometry.estimate_utm_crs())
    centroids = np.column_stack([projected.centroid.x, projected.centroid.y])  # (N, 2)
    poi = np.load(folder / "poi_dist.npy").astype(np.float64)
    landuse = np.load(folder / "landUse_dist.npy").astype(np.float64)
    flow = sp.csr_matrix(np.load(folder / "mob_dist.npy").astype(np.float64))
    n = len(regions)
    priors = SpatialPriors(
        centroids=centroids, crs=str(projected.crs), adjacency=sp.csr_matrix((n, n)),
        neighbours=np.zeros((n, 1), dtype=np.int64), neighbour_distance=np.zeros((n, 1)),
        degree=np.zeros(n, dtype=np.int64), mobility_out=np.asarray(flow.sum(1)).ravel(),
        mobility_in=np.asarray(flow.sum(0)).ravel(), distance_quantiles=np.zeros(0),
        area=projected.area.to_numpy(),
    )
    views = {
        "poi": View("poi", "counts", poi, [f"poi_{k:02d}" for k in range(poi.shape[1])]),
        "landuse": View("landuse", "counts", landuse,
                        [f"landuse_{k:02d}" for k in range(landuse.shape[1])]),
        "mobility": View("mobility", "flow", flow, [str(k) for k in range(n)]),
    }
    return RegionDataset(region_ids=regions["region_id"].to_numpy(), views=views, priors=priors,
                         geometry=regions.geometry, crs=str(regions.crs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/manhattan"))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-full", action="store_true", help="skip the run without reuse")
    parser.add_argument("--limit", type=int, default=None, help="first N regions only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = describe_regions(manhattan_dataset(args.data))[: args.limit]
    prefix = task_template("crime")
    started = time.perf_counter()
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = load_language_model(args.model, dtype=dtype)
    load_s = time.perf_counter() - started
    model.encode(texts[:4], prefix, batch_size=4)  # warm-up
    result = {"model": args.model, "kind": model.kind, "dtype": model.fingerprint.split("|")[-1],
              "threads": torch.get_num_threads(), "regions": len(texts),
              "batch_size": args.batch_size, "load_s": round(load_s, 2),
              "prefix_chars": len(prefix), "text_chars_mean": round(float(np.mean(
                  [len(t) for t in texts])), 1)}
    if hasattr(model, "prefix_ids"):
        result["prefix_tokens"] = len(model.prefix_ids(prefix))
    lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    result["text_tokens_mean"] = round(float(np.mean(lengths)), 1)
    runs = [True] if args.no_full or model.kind != "causal" else [True, False]
    vectors = {}
    for reuse in runs:
        started, cpu_started = time.perf_counter(), time.process_time()
        vectors[reuse] = model.encode(texts, prefix, batch_size=args.batch_size,
                                      reuse_prefix=reuse)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        key = "reuse" if reuse else "full"
        result[f"{key}_s"] = round(seconds, 2)
        result[f"{key}_regions_per_s"] = round(len(texts) / seconds, 2)
        # On a shared machine wall time depends on the neighbours; CPU time does not: the
        # regions per second an idle machine would give with all its threads busy.
        result[f"{key}_cpu_s"] = round(cpu_seconds, 2)
        result[f"{key}_regions_per_s_idle_estimate"] = round(
            len(texts) * torch.get_num_threads() / cpu_seconds, 2)
    if len(vectors) == 2:
        result["max_abs_diff_reuse_vs_full"] = float(np.abs(vectors[True] - vectors[False]).max())
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    print("example:", texts[0])


if __name__ == "__main__":
    main()
