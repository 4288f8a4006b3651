"""The bundled demo GeoPackage reads back to exactly the benchmark's arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.data.build import build_dataset

DEMO = Path(__file__).resolve().parents[3] / "resources" / "demo" / "manhattan.gpkg"


@pytest.fixture(scope="module")
def demo():
    if not DEMO.exists():
        pytest.skip("resources/demo/manhattan.gpkg is not built")
    path = str(DEMO)
    job = {  # as scripts/demo.sh passes it
        "regions": {"path": f"{path}|layername=regions", "id_field": "region_id"},
        "points": [{"path": f"{path}|layername=pois|category=category"}],
        "landuse": [{"path": f"{path}|layername=landuse|class=class"}],
        "trips": [{"path": f"{path}|layername=trips|origin=origin|destination=destination"
                           "|weight=trips"}],
        "targets": ["crime", "check_in", "service_call", "carbon", "income"],
        "classes": ["landuse_class"],
    }
    return build_dataset(job)


def aligned(view, width: int, prefix: str) -> np.ndarray:
    """The view's counts in the benchmark's column order (absent categories are zero)."""
    out = np.zeros((view.matrix.shape[0], width))
    for j, name in enumerate(view.columns):
        out[:, int(name.removeprefix(prefix))] = view.matrix[:, j]
    return out


def test_the_demo_layers_aggregate_to_the_benchmark_arrays(demo, manhattan_dir):
    np.testing.assert_array_equal(demo.region_ids, np.arange(180))
    poi = np.load(manhattan_dir / "poi_dist.npy")
    assert demo.views["poi"].columns == [f"poi_{i:02d}" for i in range(26) if poi[:, i].any()]
    np.testing.assert_array_equal(aligned(demo.views["poi"], 26, "poi_"), poi)
    landuse = np.load(manhattan_dir / "landUse_dist.npy")
    np.testing.assert_array_equal(aligned(demo.views["landuse"], 11, "lu_"), landuse)
    np.testing.assert_array_equal(demo.views["mobility"].matrix.toarray(),
                                  np.load(manhattan_dir / "mob_dist.npy"))
    assert not demo.report.get("dropped")  # every point fell in its region


def test_the_demo_targets_and_classes(demo, manhattan_dir):
    for name, file in [("crime", "crime"), ("check_in", "check"), ("service_call", "serviceCall"),
                       ("carbon", "carbon")]:
        np.testing.assert_array_equal(demo.targets[name],
                                      np.load(manhattan_dir / f"{file}_counts.npy").ravel())
    income = np.load(manhattan_dir / "income_counts.npy").ravel()
    np.testing.assert_array_equal(demo.targets["income"], np.where(income == 0, np.nan, income))
    clusters = json.loads((manhattan_dir / "landuse_clusters.json").read_text())
    np.testing.assert_array_equal(demo.classes["landuse_class"],
                                  [clusters[str(i)] for i in range(180)])
    assert demo.crs == "EPSG:4326" and demo.priors.crs == "EPSG:32618"
    assert DEMO.stat().st_size < 12 * 1024**2
