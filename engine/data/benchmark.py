"""The literature's benchmark folder layout (MVURE, MGFN, HREP, HAFusion, GURPP, ToPT).

| file | becomes |
|---|---|
| `poi_dist.npy` (N, C) | view "poi", kind counts, columns poi_00.. |
| `landUse_dist.npy` (N, L) | view "landuse", kind counts, columns lu_00.. |
| `mob_dist.npy` (N, N) | view "mobility", kind flow (CSR), row = origin |
| `<name>_counts.npy` (N,) or (N, 1) | target (crime, check_in, service_call, carbon, income, ...) |
| `landuse_clusters.json` {"i": class} | classes["landuse_class"] |
| a shapefile with a `region_id` field (e.g. `mh-180.shp`) | geometry, centroids, adjacency |
| `centroids.npy` (N, 2) | centroids (lon/lat or projected metres), when there is no shapefile |

`income_counts.npy` uses 0 for "unknown" (no census estimate): those regions get NaN and are
left out of training and evaluation for income. Without a shapefile or centroids, the spatial
priors come from the trips (see `priors.mobility_priors`). Other files of the layout
(`poi_simi.npy`, `landUse_simi.npy`, `mob-adj.npy`: HAFusion's precomputed similarities) are not
read; the engine computes what it needs from the views.

**The literature's split per city** (`BenchmarkSplit`, `benchmark_split`): Manhattan is
evaluated with 10 folds without shuffling; Chicago with 25 shuffled folds and San Francisco with
10 shuffled folds (scikit-learn's KFold, seed 2024), where regions without check-ins are left
out of the check-in task (HAFusion's `tasks_Chi`, `tasks_SF`). The city is named, or recognised
from the folder's name (HAFusion's `data_NY`, `data_Chi`, `data_SF`, or `manhattan`, `chicago`,
`san_francisco`); any other folder gets 10 shuffled folds (seed 2024), since the order of its
regions may follow space and unshuffled folds would then be spatial blocks.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from engine.data.dataset import RegionDataset, View
from engine.data.layers import Report
from engine.data.priors import PriorsConfig, centroid_priors, geometric_priors, mobility_priors
from engine.errors import InputError
from engine.training.cv import LITERATURE_SEED  # KFold's seed in Chicago's and SF's evaluations

TARGET_NAMES = {"crime": "crime", "check": "check_in", "serviceCall": "service_call",
                "carbon": "carbon", "income": "income"}
ZERO_IS_UNKNOWN = ("income",)  # targets whose 0 means "no estimate"


@dataclass(frozen=True)
class BenchmarkSplit:
    """How a benchmark city is evaluated: its folds, and which targets' zeros mean "no data"."""

    city: str  # manhattan, chicago, san_francisco, or "other"
    folds: int  # K of the pooled K-fold evaluation
    shuffle: bool  # shuffle the regions before folding
    fold_seed: int = LITERATURE_SEED  # KFold's random_state when shuffled
    zero_is_unknown: tuple[str, ...] = ZERO_IS_UNKNOWN  # targets whose 0 regions are left out
    recognised_from: str = ""  # how the city was chosen ("named", "folder name ...", "default")

    def describe(self) -> str:
        order = f"shuffled (seed {self.fold_seed})" if self.shuffle else "without shuffling"
        zeros = ", ".join(self.zero_is_unknown)
        return (f"{self.folds} folds {order}; regions with 0 left out of {zeros} "
                f"({self.city}: {self.recognised_from})")

    def to_dict(self) -> dict:
        return asdict(self)


LITERATURE_SPLITS = {
    "manhattan": BenchmarkSplit("manhattan", 10, False),
    "chicago": BenchmarkSplit("chicago", 25, True, zero_is_unknown=("income", "check_in")),
    "san_francisco": BenchmarkSplit("san_francisco", 10, True,
                                    zero_is_unknown=("income", "check_in")),
}
OTHER_CITY = BenchmarkSplit("other", 10, True)
CITY_NAMES = {  # folder names (lower case, separators dropped) -> city
    "datany": "manhattan", "manhattan": "manhattan", "mh180": "manhattan", "nyc": "manhattan",
    "datachi": "chicago", "chicago": "chicago", "chi": "chicago",
    "datasf": "san_francisco", "sanfrancisco": "san_francisco", "sf": "san_francisco",
}


def benchmark_split(folder: str | Path, city: str | None = None) -> BenchmarkSplit:
    """The evaluation split of a benchmark folder: of `city` when named ("manhattan", "chicago",
    "san_francisco", or "other"), else of the city its folder name names, else `OTHER_CITY`."""
    if city and city != "auto":
        key = _city_key(city)
        if key in ("other", "none"):
            return replace(OTHER_CITY, recognised_from="named")
        if CITY_NAMES.get(key) not in LITERATURE_SPLITS:
            raise InputError(f"unknown benchmark city {city!r}", field="city",
                             hint="Use manhattan, chicago, san_francisco, other or auto.")
        return replace(LITERATURE_SPLITS[CITY_NAMES[key]], recognised_from="named")
    name = Path(folder).expanduser().resolve().name
    found = CITY_NAMES.get(_city_key(name))
    if found:
        return replace(LITERATURE_SPLITS[found], recognised_from=f"the folder's name {name!r}")
    return replace(OTHER_CITY, recognised_from=f"not a literature city ({name!r})")


def _city_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_targets(wanted, targets) -> tuple[list[str], list[str]]:
    """(the dataset's target names for `wanted`, the names that match none), in order, once each.

    A name matches a target as it is, by the benchmark folder's file stem (`check` for
    check_in) or ignoring case and underscores, so the literature's `checkIn` and
    `serviceCall` name `check_in` and `service_call`."""
    def key(name: str) -> str:
        return name.replace("_", "").replace("-", "").lower()

    by_key = {key(t): t for t in targets}
    found, missing = [], []
    for name in wanted:
        target = name if name in targets else by_key.get(key(TARGET_NAMES.get(name, name)))
        if target is None:
            missing.append(name)
        elif target not in found:
            found.append(target)
    return found, missing


def load_benchmark_folder(path: str | Path, log=None,
                          priors_config: PriorsConfig | None = None,
                          city: str | None = None) -> RegionDataset:
    """Load a benchmark folder into a RegionDataset (see the module docstring for the files).

    `city` (default: recognised from the folder's name, see `benchmark_split`) decides which
    targets' zeros mean "no data"; the split is kept in `dataset.source["split"]`."""
    folder = Path(path).expanduser()
    report = Report(log=log)
    if not folder.is_dir():
        raise InputError("the benchmark folder does not exist", layer=str(path),
                         hint="Give the folder that holds poi_dist.npy, mob_dist.npy, ...")
    split = benchmark_split(folder, city)
    views: dict[str, View] = {}
    sizes: dict[str, int] = {}
    for file, name, prefix in (("poi_dist.npy", "poi", "poi"), ("landUse_dist.npy", "landuse", "lu")):
        if (folder / file).exists():
            matrix = _load(folder / file, 2).astype(np.float64)  # (N, C)
            views[name] = View(name, "counts", matrix,
                               [f"{prefix}_{i:02d}" for i in range(matrix.shape[1])])
            sizes[file] = matrix.shape[0]
    if (folder / "mob_dist.npy").exists():
        dense = _load(folder / "mob_dist.npy", 2)
        if dense.shape[0] != dense.shape[1]:
            raise InputError(f"mob_dist.npy must be N x N, it is {dense.shape}",
                             layer=str(folder / "mob_dist.npy"))
        flow = sp.csr_matrix(dense.astype(np.float64))  # (N, N), row = origin
        views["mobility"] = View("mobility", "flow", flow, [str(i) for i in range(len(dense))])
        sizes["mob_dist.npy"] = dense.shape[0]
    if not views:
        raise InputError("the folder holds none of poi_dist.npy, landUse_dist.npy, mob_dist.npy",
                         layer=str(folder), hint="Give a folder in the benchmark layout.")
    targets = {}
    for file in sorted(folder.glob("*_counts.npy")):
        stem = file.name[: -len("_counts.npy")]
        name = TARGET_NAMES.get(stem, stem)
        values = _load(file, None).astype(np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values.ravel()  # (N, 1) -> (N,)
        if values.ndim != 1:
            raise InputError(f"a target must be (N,) or (N, 1), it is {values.shape}",
                             layer=str(file))
        if name in split.zero_is_unknown:
            unknown = values == 0
            values[unknown] = np.nan
            if unknown.any():
                report.note("unknown_as_zero", name, int(unknown.sum()))
        targets[name] = values
        sizes[file.name] = len(values)
    n = _one_size(sizes, folder)
    classes = {}
    clusters = folder / "landuse_clusters.json"
    if clusters.exists():
        mapping = json.loads(clusters.read_text(encoding="utf-8"))
        if len(mapping) != n or any(str(i) not in mapping for i in range(n)):
            raise InputError(f"landuse_clusters.json must map every region 0..{n - 1}",
                             layer=str(clusters))
        classes["landuse_class"] = np.array([int(mapping[str(i)]) for i in range(n)])

    flows = [v.matrix for v in views.values() if v.kind == "flow"]
    config = priors_config or PriorsConfig()
    geometry, crs, source = _region_shapes(folder, n)
    if geometry is not None:
        priors = geometric_priors(geometry, flows, config)
    elif (folder / "centroids.npy").exists():
        priors = _centroid_file_priors(folder / "centroids.npy", n, flows, config)
        source = str(folder / "centroids.npy")
    elif flows:
        priors = mobility_priors(flows, config)
        report.warn("the benchmark folder has no shapefile or centroids: neighbours and "
                    "distances come from the trips")
    else:
        raise InputError("the folder has no shapefile, no centroids.npy and no mob_dist.npy: "
                         "nothing tells where the regions are", layer=str(folder),
                         hint="Add the regions' shapefile (with region_id) or centroids.npy.")
    return RegionDataset(
        region_ids=np.arange(n, dtype=np.int64), views=views, priors=priors, targets=targets,
        classes=classes, geometry=geometry, crs=crs,
        source={"benchmark": str(folder), "geometry": source, "split": split.to_dict()},
        report=report.data)


def _load(file: Path, ndim: int | None) -> np.ndarray:
    try:
        array = np.load(file, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read the array: {exc}", layer=str(file)) from exc
    if ndim is not None and array.ndim != ndim:
        raise InputError(f"expected a {ndim}-d array, found shape {array.shape}", layer=str(file))
    return array


def _one_size(sizes: dict[str, int], folder: Path) -> int:
    if len(set(sizes.values())) != 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise InputError(f"the files disagree on the number of regions ({listing})",
                         layer=str(folder), hint="Every array must have one row per region.")
    return next(iter(sizes.values()))


def _region_shapes(folder: Path, n: int):
    """(GeoSeries ordered by region_id, its CRS string, its path) of the folder's shapefile."""
    import geopandas as gpd

    for file in sorted(folder.glob("*.shp")):
        frame = gpd.read_file(file, engine="pyogrio")
        if "region_id" not in frame.columns or len(frame) != n or frame.crs is None:
            continue
        order = frame["region_id"].to_numpy()
        if sorted(order.tolist()) != list(range(n)):
            continue
        frame = frame.set_index("region_id").sort_index()
        geometry = frame.geometry.reset_index(drop=True)
        return geometry, frame.crs.to_string(), str(file)
    return None, None, None


def _centroid_file_priors(file: Path, n: int, flows, config: PriorsConfig):
    centroids = _load(file, 2).astype(np.float64)
    if centroids.shape != (n, 2):
        raise InputError(f"centroids.npy must be ({n}, 2), it is {centroids.shape}",
                         layer=str(file))
    if np.abs(centroids[:, 0]).max() <= 180 and np.abs(centroids[:, 1]).max() <= 90:
        import geopandas as gpd

        points = gpd.GeoSeries(gpd.points_from_xy(centroids[:, 0], centroids[:, 1]),
                               crs="EPSG:4326")
        crs = points.estimate_utm_crs()
        centroids = np.column_stack([points.to_crs(crs).x, points.to_crs(crs).y])
        return centroid_priors(centroids, crs.to_string(), flows=flows, config=config)
    return centroid_priors(centroids, None, flows=flows, config=config)
