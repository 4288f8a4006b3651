"""A failing plugin test ends in its own failure (exit 1 and a summary), not in a crash of the
test process at QGIS's exit (exit 139), which would hide which test failed and why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FAILING_TEST = '''
from conftest import make_regions


def test_fails_while_holding_geopackage_layers(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(make_regions(tmp_path / "regions.gpkg", count=20), "regions", "ogr")
    other = QgsVectorLayer(make_regions(tmp_path / "other.gpkg", count=5), "other", "ogr")
    assert layer.featureCount() == other.featureCount(), "deliberate"
'''


def test_a_failing_test_on_qgis_reports_its_failure_instead_of_crashing(tmp_path):
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "test_deliberate.py").write_text(FAILING_TEST)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "qgis_failures",
         "--rootdir", str(folder), str(folder / "test_deliberate.py")],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 failed" in done.stdout and "deliberate" in done.stdout
