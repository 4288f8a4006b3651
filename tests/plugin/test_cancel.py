"""Cancelling a run stops the engine process (and kills one that ignores SIGTERM)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import checksum


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("mode", ["sleep", "ignore_term"])
def test_cancel_mid_run_stops_the_engine_and_leaves_the_layer(fake_engine, regions_gpkg,
                                                              tmp_path, mode, monkeypatch):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    from topt_qgis import engine_runner

    monkeypatch.setattr(engine_runner, "GRACE_SECONDS", 1.0)
    fake_engine.set_mode(mode)
    before = checksum(regions_gpkg.split("|")[0])
    feedback = QgsProcessingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)

    def cancel_when_running():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if fake_engine.record_file.exists() and progress:
                feedback.cancel()
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    started = time.monotonic()
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("topt:learn_and_predict", {
            "REGIONS": regions_gpkg, "ID_FIELD": "region_id", "TARGETS": ["crime"],
            "WRITE_BACK": True, "OUTPUT": str(tmp_path / "never.gpkg")},
            context=QgsProcessingContext(), feedback=feedback)
    canceller.join()
    assert time.monotonic() - started < 15  # the fake engine would sleep 60 s
    assert not _alive(fake_engine.record()["pid"])
    assert checksum(regions_gpkg.split("|")[0]) == before
    assert not (tmp_path / "never.gpkg").exists()
