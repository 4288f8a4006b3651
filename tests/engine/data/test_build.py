"""build_dataset from job dicts as the CLI and the plugin write them, and the prepare summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data.build import DataSpec, build_dataset, prepare_summary_text
from engine.errors import InputError


def test_sources_written_as_qgis_writes_them(tiny_layers, tiny_expected):
    regions = tiny_layers["regions"]
    job = {
        "regions": {"path": f"{regions['path']}|layername=blocks", "id_field": "code",
                    "fields": "pop,jobs"},
        "points": [{"path": f"{tiny_layers['points'][0]['path']}|layername=pois|category=type"
                            "|view=amenities"}],
        "trips": [{"path": f"{tiny_layers['trips'][0]['path']}|origin=from|destination=to"}],
        "targets": "crime", "out_dir": "ignored", "epochs": 3,
    }
    d = build_dataset(json.loads(json.dumps(job)))
    assert list(d.views) == ["fields", "amenities", "mobility"]
    np.testing.assert_array_equal(d.views["amenities"].matrix, tiny_expected["poi"])
    np.testing.assert_array_equal(d.views["mobility"].matrix.toarray(),
                                  (tiny_expected["flow"] > 0).astype(float))  # 1 per row
    assert list(d.targets) == ["crime"]


def test_two_layers_for_one_view_name_get_distinct_names(tiny_layers):
    tiny_layers["points"] = tiny_layers["points"] * 2
    messages = []
    d = build_dataset(tiny_layers, log=messages.append)
    assert "poi" in d.views and "poi_2" in d.views
    assert any("poi_2" in m for m in messages)


def test_priors_options_and_unknown_ones(tiny_layers):
    tiny_layers["priors"] = {"neighbours": 3, "distance_buckets": 4}
    d = build_dataset(tiny_layers)
    assert d.priors.neighbours.shape == (12, 3) and len(d.priors.distance_quantiles) == 3
    tiny_layers["priors"] = {"neighbors": 3}
    with pytest.raises(InputError, match="unknown priors option"):
        DataSpec.from_dict(tiny_layers)
    with pytest.raises(InputError, match="no region layer"):
        DataSpec.from_dict({"points": []})


def test_the_summary_names_views_crs_and_what_was_left_out(tiny_dataset):
    text = prepare_summary_text(tiny_dataset)
    assert text.splitlines()[0] == "12 regions from regions.gpkg|layername=blocks"
    assert "CRS: layer EPSG:32618, distances and areas in EPSG:32618" in text
    assert "mobility (flow): 24 origin-destination pairs" in text
    assert "raster (continuous): 6 columns" in text
    assert "target crime: 11 of 12 regions labelled" in text
    assert "left out in layers.gpkg|layername=pois: 2 outside regions" in text
    summary = tiny_dataset.summary()
    json.dumps(summary)  # what `prepare` writes as dataset.json
    assert summary["views"]["poi"]["total"] == 24 + 6  # food (1+2+3) x 4, shops 6
