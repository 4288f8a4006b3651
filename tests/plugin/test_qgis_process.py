"""Headless: `qgis_process.bin run topt:...` in a fresh QGIS profile with the plugin enabled.

Debian 12's /usr/bin/qgis_process wrapper is broken; qgis_process.bin is called directly with
QT_QPA_PLATFORM=offscreen and QGIS_CUSTOM_CONFIG_PATH pointing at a throwaway profile folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import FAKE_ENGINE, ROOT, SYSTEM_PYTHON, make_points, make_regions

QGIS_PROCESS = shutil.which("qgis_process.bin")
pytestmark = pytest.mark.skipif(QGIS_PROCESS is None, reason="qgis_process.bin is not installed")


def plugin_profile(folder):
    """A QGIS profile folder whose plugins/topt_qgis is the plugin as packaged (by symlinks)."""
    plugin = folder / "profiles" / "default" / "python" / "plugins" / "topt_qgis"
    plugin.mkdir(parents=True)
    for item in (ROOT / "topt_qgis").iterdir():
        if item.name not in ("__pycache__", "metadata.txt", "resources"):
            (plugin / item.name).symlink_to(item)
    (plugin / "metadata.txt").symlink_to(ROOT / "metadata.txt")
    (plugin / "resources").symlink_to(ROOT / "resources")
    return folder


def qgis_process(profile, *args, timeout=120, mode="ok"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile),
               TOPT_ENGINE_PYTHON=SYSTEM_PYTHON, TOPT_ENGINE_SOURCE=str(FAKE_ENGINE),
               FAKE_ENGINE_MODE=mode)
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_qgis_process_runs_learn_and_predict(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    profile = plugin_profile(tmp_path / "profile")
    enabled = qgis_process(profile, "plugins", "enable", "topt_qgis")
    assert enabled.returncode == 0, enabled.stderr
    listing = qgis_process(profile, "list")
    assert "topt:learn_and_predict" in listing.stdout, listing.stdout + listing.stderr
    regions = make_regions(tmp_path / "city.gpkg", count=6)
    ran = qgis_process(profile, "--json", "run", "topt:learn_and_predict", "--",
                       f"REGIONS={regions}", "ID_FIELD=region_id", "TARGETS=crime",
                       "TARGETS=check_in", "EMBEDDING_SIZE=2", f"OUTPUT={tmp_path / 'out.gpkg'}",
                       f"MODEL_OUTPUT={tmp_path / 'model'}", f"REPORT={tmp_path / 'report.html'}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = json.loads(ran.stdout)["results"]
    assert results["OUTPUT"] == str(tmp_path / "out.gpkg")
    layer = QgsVectorLayer(results["OUTPUT"], "out", "ogr")
    assert layer.featureCount() == 6
    assert {"pred_crime", "pred_check_in", "emb_001"} <= set(layer.fields().names())
    for feature in layer.getFeatures():
        assert feature["pred_check_in"] == pytest.approx(2 * feature["region_id"] + 0.5)
    assert (tmp_path / "model" / "metrics.json").is_file()
    assert (tmp_path / "report.html").is_file()


def test_qgis_process_reports_engine_errors(qgis_app, tmp_path):
    profile = plugin_profile(tmp_path / "profile")
    qgis_process(profile, "plugins", "enable", "topt_qgis")
    regions = make_regions(tmp_path / "city.gpkg", count=6)
    ran = qgis_process(profile, "run", "topt:learn_and_predict", "--", f"REGIONS={regions}",
                       "ID_FIELD=region_id", "TARGETS=crime", f"OUTPUT={tmp_path / 'out.gpkg'}",
                       mode="input_error")
    assert ran.returncode != 0
    assert "only 3 regions have a value" in ran.stdout + ran.stderr
    assert "Choose a target with more values." in ran.stdout + ran.stderr
    assert not (tmp_path / "out.gpkg").exists()


def test_qgis_process_runs_the_real_engine_end_to_end(qgis_app, tmp_path):
    """The real engine (.venv) on a tiny layer, through qgis_process.bin, as a batch model would."""
    from qgis.core import QgsVectorLayer

    engine_python = ROOT / ".venv" / "bin" / "python"
    if not engine_python.exists():
        pytest.skip("the engine environment .venv is not installed (make setup)")
    profile = plugin_profile(tmp_path / "profile")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile),
               TOPT_ENGINE_PYTHON=str(engine_python), TOPT_ENGINE_SOURCE=str(ROOT),
               HF_HUB_OFFLINE="1")
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "topt_qgis"], env=env, check=True,
                   capture_output=True, timeout=120)
    regions = make_regions(tmp_path / "city.gpkg", count=24, with_nulls=True)
    points = make_points(tmp_path / "pois.gpkg", count=120)
    before = (tmp_path / "city.gpkg").read_bytes()
    ran = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "topt:learn_and_predict", "--", f"REGIONS={regions}",
         "ID_FIELD=region_id", f"POINTS={points}", "POINT_CATEGORY_FIELD=category",
         "TARGETS=crime", "LANGUAGE_MODEL=none", "EMBEDDING_SIZE=8", "EPOCHS=3", "FOLDS=3",
         "DEVICE=cpu", f"OUTPUT={tmp_path / 'out.gpkg'}", f"MODEL_OUTPUT={tmp_path / 'model'}",
         f"REPORT={tmp_path / 'report.html'}"],
        env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    layer = QgsVectorLayer(str(tmp_path / "out.gpkg"), "out", "ogr")
    assert layer.featureCount() == 24
    names = set(layer.fields().names())
    assert {"emb_000", "emb_007", "pred_crime"} <= names and "emb_008" not in names
    predictions = [f["pred_crime"] for f in layer.getFeatures()]
    assert all(p is not None for p in predictions)  # unlabelled regions are predicted too
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["protocol"] == "clean" and not metrics["optimistic"]
    assert "crime" in metrics["tasks"]
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert (tmp_path / "city.gpkg").read_bytes() == before  # the user's layer is untouched
