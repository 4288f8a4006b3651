"""Finding the engine, running algorithms as a background task, the install step's messages."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import ROOT, make_regions


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_engine_python_lookup_order(clean_settings, monkeypatch, tmp_path):
    from topt_qgis import engine_runner

    monkeypatch.delenv("TOPT_ENGINE_PYTHON", raising=False)
    monkeypatch.setattr(engine_runner, "engine_venv_dir", lambda: tmp_path / "profile-venv")
    source = tmp_path / "checkout"
    assert engine_runner.find_engine_python(source) is None
    installed = _executable(tmp_path / "profile-venv" / "bin" / "python")
    assert engine_runner.find_engine_python(source)[0] == installed
    project = _executable(source / ".venv" / "bin" / "python")
    assert engine_runner.find_engine_python(source)[0] == project
    from_env = _executable(tmp_path / "env" / "python")
    monkeypatch.setenv("TOPT_ENGINE_PYTHON", str(from_env))
    assert engine_runner.find_engine_python(source)[0] == from_env
    from_setting = _executable(tmp_path / "setting" / "python")
    clean_settings.setValue("topt/engine_python", str(from_setting))
    assert engine_runner.find_engine_python(source) == (from_setting,
                                                        "the QGIS setting topt/engine_python")


def test_engine_source_is_found_beside_the_plugin(clean_settings, monkeypatch):
    from topt_qgis import engine_runner

    monkeypatch.delenv("TOPT_ENGINE_SOURCE", raising=False)
    assert engine_runner.find_engine_source() == ROOT  # a checkout: engine/ beside topt_qgis/


def test_clean_environment_keeps_only_what_the_engine_needs(tmp_path):
    from topt_qgis.engine_runner import clean_environment

    env = clean_environment(tmp_path, {
        "PATH": "/usr/bin", "PYTHONHOME": "/q", "PYTHONPATH": "/q/plugins", "PROJ_LIB": "/p",
        "PROJ_DATA": "/p", "GDAL_DATA": "/g", "GDAL_DRIVER_PATH": "/d", "QT_QPA_PLATFORM": "x",
        "HF_HUB_OFFLINE": "1", "HOME": "/root"})
    assert env["PYTHONPATH"] == str(tmp_path)
    assert {"PATH": "/usr/bin", "HF_HUB_OFFLINE": "1", "HOME": "/root"}.items() <= env.items()
    for dropped in ("PYTHONHOME", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH",
                    "QT_QPA_PLATFORM"):
        assert dropped not in env


def test_algorithm_runs_as_a_background_task_and_writes_back_on_completion(fake_engine,
                                                                           tmp_path):
    """The way the toolbox dialog runs it: QgsProcessingAlgRunnerTask, postProcess afterwards."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingAlgRunnerTask,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer(make_regions(tmp_path / "mine.gpkg"), "mine", "ogr")
    QgsProject.instance().addMapLayer(layer)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("topt:learn_and_predict")
    task = QgsProcessingAlgRunnerTask(algorithm, {
        "REGIONS": layer.id(), "ID_FIELD": "region_id", "TARGETS": ["crime"],
        "EMBEDDING_SIZE": 2, "WRITE_BACK": True, "OUTPUT": str(tmp_path / "out.gpkg")},
        context, feedback)
    outcome = {}
    task.executed.connect(lambda ok, results: outcome.update(ok=ok, results=results))
    QgsApplication.taskManager().addTask(task)
    deadline = time.monotonic() + 30
    try:
        while "ok" not in outcome and time.monotonic() < deadline:
            QgsApplication.processEvents()
            time.sleep(0.02)
        assert outcome.get("ok") is True, outcome
        assert os.path.exists(outcome["results"]["OUTPUT"])
        assert "pred_crime" in layer.fields().names()
        for feature in layer.getFeatures():
            assert feature["pred_crime"] == pytest.approx(2 * feature["region_id"] + 0.5)
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_install_engine_failure_is_explained(provider, monkeypatch):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    from topt_qgis import engine_installer

    def no_network(*args, **kwargs):
        raise engine_installer.EngineInstallError(
            "The Python package index could not be reached.", kind="network",
            hint="Check the internet connection or the proxy settings.")

    monkeypatch.setattr(engine_installer, "install_engine", no_network)
    with pytest.raises(QgsProcessingException, match="could not be reached. Check the internet"):
        processing.run("topt:install_engine", {}, context=QgsProcessingContext(),
                       feedback=QgsProcessingFeedback())


def test_progress_bar_sums_stages_that_report_side_by_side_and_never_moves_back():
    """SREL and the language model report in turns on the CPU: the bar adds both shares."""
    import json

    from qgis.core import QgsProcessingFeedback

    from topt_qgis.engine_runner import _EventFollower

    shown = []

    class Feedback(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 (QGIS API)
            shown.append(progress)
            super().setProgress(progress)

    follower = _EventFollower(Feedback())

    def progress(stage, fraction):
        follower.take(json.dumps({"event": "progress", "v": 1, "time": 0.0, "stage": stage,
                                  "fraction": fraction, "message": ""}).encode() + b"\n")

    progress("data", 1.0)
    assert shown[-1] == pytest.approx(5.0)
    progress("srel", 0.5)  # 5 + 55 * 0.5
    assert shown[-1] == pytest.approx(32.5)
    progress("prompts", 0.5)  # + 20 * 0.5, SREL still half done
    assert shown[-1] == pytest.approx(42.5)
    progress("srel", 1.0)
    assert shown[-1] == pytest.approx(70.0)
    progress("prompts", 1.0)
    progress("fit", 0.5)
    assert shown[-1] == pytest.approx(88.5)
    assert shown == sorted(shown)
    # A run without the language model: "prompts" never reports and counts as done once
    # "fit" does.
    shown.clear()
    follower = _EventFollower(Feedback())
    progress("data", 1.0)
    progress("srel", 1.0)
    progress("fit", 0.0)
    assert shown[-1] == pytest.approx(80.0)


def test_progress_text_says_how_long_the_stage_has_left():
    """A 10,000-region city spends most of an hour on the prompt vectors: the toolbox's
    progress text carries the engine's estimate of the stage's remaining time."""
    import json

    from qgis.core import QgsProcessingFeedback

    from topt_qgis.engine_runner import _EventFollower

    texts = []

    class Feedback(QgsProcessingFeedback):
        def setProgressText(self, text):  # noqa: N802 (QGIS API)
            texts.append(text)
            super().setProgressText(text)

    follower = _EventFollower(Feedback())
    for extra in ({}, {"seconds_left": 2880.0}):
        follower.take(json.dumps({"event": "progress", "v": 1, "time": 0.0, "stage": "prompts",
                                  "fraction": 0.04, "message": "crime: encoded 400 of 10000",
                                  **extra}).encode() + b"\n")
    assert texts == ["prompts: crime: encoded 400 of 10000",
                     "prompts: crime: encoded 400 of 10000 (about 48 min left)"]
