"""The plugin loads, its provider and algorithms are registered, and it keeps to QGIS's world."""

from __future__ import annotations

import configparser
import re

from conftest import ROOT

EXPECTED = {"learn_and_predict", "build_region_features", "train_model", "predict_with_model",
            "write_fields_into_layer", "check_engine", "install_engine"}


def test_provider_registers_every_algorithm(provider):
    from qgis.core import QgsApplication

    assert provider.id() == "topt" and provider.name() == "ToPT"
    names = {a.name() for a in provider.algorithms()}
    assert names == EXPECTED
    registry = QgsApplication.processingRegistry()
    for name in EXPECTED:
        algorithm = registry.algorithmById(f"topt:{name}")
        assert algorithm is not None, name
        assert algorithm.shortHelpString().strip(), f"{name} has no help"
        assert algorithm.displayName() and algorithm.group()


def test_main_algorithm_parameters_and_advanced_flags(provider):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    algorithm = QgsApplication.processingRegistry().algorithmById("topt:learn_and_predict")
    names = [p.name() for p in algorithm.parameterDefinitions()]
    for needed in ("REGIONS", "ID_FIELD", "POINTS", "POINT_CATEGORY_FIELD", "LANDUSE",
                   "LANDUSE_CLASS_FIELD", "TRIPS", "TRIP_ORIGIN_FIELD", "TRIP_DESTINATION_FIELD",
                   "TRIP_WEIGHT_FIELD", "RASTERS", "TARGETS", "TASK_DESCRIPTIONS",
                   "LANGUAGE_MODEL", "EMBEDDING_SIZE", "EPOCHS", "FOLDS", "DEVICE", "SEED",
                   "PROTOCOL", "OUTPUT", "MODEL_OUTPUT", "REPORT", "WRITE_BACK"):
        assert needed in names, needed
    advanced = {p.name() for p in algorithm.parameterDefinitions()
                if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert {"EMBEDDING_SIZE", "EPOCHS", "FOLDS", "DEVICE", "SEED", "PROTOCOL"} <= advanced
    assert "REGIONS" not in advanced and "TARGETS" not in advanced
    model = algorithm.parameterDefinition("LANGUAGE_MODEL")
    assert model.usesStaticStrings() and model.options()[:3] == ["smollm2", "minilm", "none"]


def test_missing_engine_explains_setup_instead_of_vanishing(provider, clean_settings,
                                                             monkeypatch, tmp_path):
    from qgis.core import QgsApplication

    monkeypatch.setenv("TOPT_ENGINE_PYTHON", str(tmp_path / "no-such-python"))
    algorithm = QgsApplication.processingRegistry().algorithmById("topt:learn_and_predict")
    ok, message = algorithm.canExecute()
    assert not ok
    assert "Install engine" in message and "no-such-python" in message
    check = QgsApplication.processingRegistry().algorithmById("topt:check_engine")
    assert check.canExecute()[0]


def test_metadata_has_every_field_the_plugin_store_needs():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "email", "repository", "tracker", "homepage", "tags", "category", "icon",
                "experimental", "hasProcessingProvider", "supportsQt6", "license"):
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["category"] == "Analysis"
    assert general["hasProcessingProvider"] == "yes"
    assert general["license"] == "GPL-2.0-or-later"
    assert (ROOT / general["icon"]).is_file()


def test_plugin_never_imports_the_engine_torch_or_numpy():
    pattern = re.compile(r"^\s*(import|from)\s+(torch|numpy|engine|pandas|geopandas)\b",
                         re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "topt_qgis").rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
