"""Plugin tests: a real QGIS 3.22 (offscreen, pytest-qgis), the plugin's provider registered,
and a fake engine (tests/plugin/fake_engine) run by the system Python unless a test asks for the
real one."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_ENGINE = Path(__file__).resolve().parent / "fake_engine"
SYSTEM_PYTHON = "/usr/bin/python3"
REAL_ENGINE_PYTHON = ROOT / ".venv" / "bin" / "python"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qgis_failures import pytest_runtest_makereport  # noqa: E402, F401 (a hook: see there)


@pytest.fixture(scope="session")
def provider(qgis_app, qgis_processing):
    """The ToPT provider, registered once as the plugin registers it."""
    from qgis.core import QgsApplication

    from topt_qgis.provider import ToptProvider

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("topt")
    if existing is not None:
        return existing
    made = ToptProvider()
    assert registry.addProvider(made)
    return made


class FakeEngine:
    """Points the plugin at the fake engine; `mode` picks its behaviour, `record()` what it saw."""

    def __init__(self, monkeypatch, folder: Path) -> None:
        self.record_file = folder / "fake-engine-record.json"
        monkeypatch.setenv("TOPT_ENGINE_PYTHON", SYSTEM_PYTHON)
        monkeypatch.setenv("TOPT_ENGINE_SOURCE", str(FAKE_ENGINE))
        monkeypatch.setenv("FAKE_ENGINE_RECORD", str(self.record_file))
        monkeypatch.setenv("FAKE_ENGINE_MODE", "ok")
        self._monkeypatch = monkeypatch

    def set_mode(self, mode: str) -> None:
        self._monkeypatch.setenv("FAKE_ENGINE_MODE", mode)

    def record(self) -> dict:
        return json.loads(self.record_file.read_text())


@pytest.fixture
def clean_settings(qgis_app):
    from qgis.core import QgsSettings

    settings = QgsSettings()
    for key in ("topt/engine_python", "topt/engine_source"):
        settings.remove(key)
    yield settings
    for key in ("topt/engine_python", "topt/engine_source"):
        settings.remove(key)


@pytest.fixture
def fake_engine(monkeypatch, tmp_path, clean_settings, provider) -> FakeEngine:
    return FakeEngine(monkeypatch, tmp_path)


@pytest.fixture
def real_engine(monkeypatch, clean_settings, provider):
    """The project's engine (.venv + engine/cli.py); skipped with the reason when absent."""
    if not REAL_ENGINE_PYTHON.exists():
        pytest.skip(f"the engine environment {REAL_ENGINE_PYTHON} is not installed (make setup)")
    if not (ROOT / "engine" / "cli.py").exists():
        pytest.skip("engine/cli.py does not exist yet")
    monkeypatch.delenv("TOPT_ENGINE_PYTHON", raising=False)
    monkeypatch.setenv("TOPT_ENGINE_SOURCE", str(ROOT))
    return REAL_ENGINE_PYTHON


def make_regions(path: Path, count: int = 12, *, layer_name: str = "regions",
                 driver: str = "GPKG", with_nulls: bool = True) -> str:
    """A grid of `count` square regions with region_id (ids 100+i), name, crime (some empty)."""
    from qgis.core import (
        QgsCoordinateTransformContext,
        QgsFeature,
        QgsGeometry,
        QgsRectangle,
        QgsVectorFileWriter,
        QgsVectorLayer,
    )

    memory = QgsVectorLayer("Polygon?crs=EPSG:3857&field=region_id:integer&field=name:string"
                            "&field=crime:double&field=check_in:double", layer_name, "memory")
    features = []
    for i in range(count):
        feature = QgsFeature(memory.fields())
        x, y = (i % 4) * 100.0, (i // 4) * 100.0
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y, x + 100, y + 100)))
        crime = None if (with_nulls and i % 5 == 4) else float(3 * i + 1)
        feature.setAttributes([100 + i, f"region {i}", crime, float(i * i)])
        features.append(feature)
    memory.dataProvider().addFeatures(features)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.layerName = layer_name
    error = QgsVectorFileWriter.writeAsVectorFormatV2(memory, str(path),
                                                      QgsCoordinateTransformContext(), options)
    assert error[0] == QgsVectorFileWriter.NoError, error
    return f"{path}|layername={layer_name}" if driver == "GPKG" else str(path)


def make_points(path: Path, count: int = 30) -> str:
    from qgis.core import (
        QgsCoordinateTransformContext,
        QgsFeature,
        QgsGeometry,
        QgsPointXY,
        QgsVectorFileWriter,
        QgsVectorLayer,
    )

    memory = QgsVectorLayer("Point?crs=EPSG:3857&field=category:string", "pois", "memory")
    features = []
    for i in range(count):
        feature = QgsFeature(memory.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY((i * 37) % 400 + 5,
                                                               (i * 53) % 300 + 5)))
        feature.setAttributes(["food" if i % 2 else "shop"])
        features.append(feature)
    memory.dataProvider().addFeatures(features)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "pois"
    error = QgsVectorFileWriter.writeAsVectorFormatV2(memory, str(path),
                                                      QgsCoordinateTransformContext(), options)
    assert error[0] == QgsVectorFileWriter.NoError, error
    return f"{path}|layername=pois"


def checksum(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def regions_gpkg(tmp_path) -> str:
    return make_regions(tmp_path / "city.gpkg")


@pytest.fixture
def points_gpkg(tmp_path) -> str:
    return make_points(tmp_path / "pois.gpkg")
