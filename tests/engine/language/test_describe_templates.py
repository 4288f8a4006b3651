"""Region descriptions (facts, never targets) and task templates (the five parts)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import region_dataset

from engine.language.describe import describe_region, describe_regions
from engine.language.templates import TASKS, task_kind, task_template


def test_description_holds_the_region_facts(dataset):
    text = describe_region(dataset, 2)
    assert text.startswith("Region 102 (Block C):")
    # Centroid of (586400, 4512000) in UTM 18N is about 40.753N 73.985W (midtown Manhattan).
    lat, lon = (float(v) for v in re.search(r"([\d.]+)N ([\d.]+)W", text).groups())
    assert lat == pytest.approx(40.753, abs=0.01) and lon == pytest.approx(73.985, abs=0.01)
    assert "0.25 km2" in text
    poi = dataset.views["poi"].matrix[2]
    top = int(np.argmax(poi))
    name = dataset.views["poi"].columns[top]
    share = round(100 * poi[top] / poi.sum())
    assert f"POIs {int(poi.sum())}:" in text
    assert f"{name} {int(poi[top])} ({share}%)" in text
    assert "Land use: " in text and "%" in text
    flow = dataset.views["mobility"].matrix
    assert f"Trips out {int(flow[2].sum())}, in {int(flow[:, 2].sum())}" in text
    destination = int(np.argmax(flow[2].toarray()))
    assert f"to {100 + destination} (" in text  # the destination named by region id
    assert len(re.findall(r"to [^;]*$", text)[0].split(",")) == 1  # one destination
    assert "median_age" in text


def test_descriptions_match_one_by_one(dataset):
    texts = describe_regions(dataset)
    assert len(texts) == dataset.n_regions
    assert texts == [describe_region(dataset, i) for i in range(dataset.n_regions)]
    assert len(set(texts)) == dataset.n_regions


def test_descriptions_never_contain_targets():
    dataset = region_dataset()
    n = dataset.n_regions
    targets = np.array([987654.321 + 1111 * k for k in range(n)])
    dataset.targets["crime_count"] = targets
    # A reader that also kept the target as a field must not leak it either.
    fields = dataset.views["fields"]
    fields.matrix = np.column_stack([fields.matrix, targets])
    fields.columns = [*fields.columns, "crime_count"]
    for i, text in enumerate(describe_regions(dataset)):
        assert "crime_count" not in text
        for value in targets:
            for shown in (f"{value:.3g}", str(int(round(value))), f"{value:.1f}", "987"):
                assert shown not in text, (i, shown, text)


def test_description_without_geometry_or_names():
    dataset = region_dataset(with_names=False)
    dataset.priors.centroids = None
    dataset.priors.area = None
    text = describe_region(dataset, 0)
    assert text.startswith("Region 100.") and "km2" not in text and "N " not in text


def test_description_is_compact(dataset):
    """Every token costs model time: a region's text stays short."""
    assert max(len(t) for t in describe_regions(dataset)) < 400


def test_shares_only_on_request(dataset):
    from engine.language.describe import DescriptionConfig

    poi = dataset.views["poi"].matrix[2]
    top = int(np.argmax(poi))
    text = describe_region(dataset, 2, DescriptionConfig(category_counts=False))
    share = round(100 * poi[top] / poi.sum())
    assert f"POIs {int(poi.sum())}: {dataset.views['poi'].columns[top]} {share}%" in text
    assert len(text) < len(describe_region(dataset, 2))


@pytest.mark.parametrize("name,kind", [
    ("crime", "crime"), ("crime_count", "crime"), ("crime_counts", "crime"),
    ("check_in", "check_in"), ("checkin", "check_in"), ("check-ins", "check_in"),
    ("check_counts", "check_in"), ("service_call", "service_call"),
    ("serviceCall_counts", "service_call"), ("311", "service_call"), ("income", "income"),
    ("income_counts", "income"), ("carbon", "carbon"), ("carbon_counts", "carbon"),
    ("population", "population"), ("pop", "population"), ("POP_2020", "population"),
    ("tree_cover", None), ("noise_level", None),
])
def test_target_names_map_to_tasks(name, kind):
    assert task_kind(name) == kind


@pytest.mark.parametrize("name", [*TASKS, "tree_cover"])
@pytest.mark.parametrize("has_image", [False, True])
def test_templates_have_the_five_parts(name, has_image):
    text = task_template(name, has_image=has_image)
    assert text.startswith("You are ")  # 1. an expert role
    assert "Region text:" in text  # 2. each input described...
    assert ("Image:" in text) == has_image  # ...the image only when there is one
    assert "Task: " in text  # 3. the core task
    steps = re.findall(r"^(\d+)\. ", text, flags=re.M)  # 4. numbered analysis steps
    assert [int(s) for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 5
    assert "summary of the key features" in text  # 5. the summary request
    assert text.rstrip().endswith("Region:")  # the region's text follows
    assert 1200 < len(text) < 4000


def test_generic_template_uses_name_and_description():
    text = task_template("tree_cover", "share of the region shaded by tree canopy")
    assert "'tree cover'" in text and "tree canopy" in text
    assert task_template("tree_cover") != text
    assert "tree canopy" in task_template("crime", "tree canopy as a proxy")
