"""Check engine: which Python runs the engine, its versions, device and default language model."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingOutputBoolean,
    QgsProcessingOutputString,
)

from .. import engine_runner
from .base import ToptAlgorithm, tr


class CheckEngineAlgorithm(ToptAlgorithm):
    NAME = "check_engine"
    DISPLAY_NAME = "Check engine"
    GROUP = "Engine"
    GROUP_ID = "engine"
    NEEDS_ENGINE = False
    HELP = ("Reports where the ToPT engine is (its Python environment and source), the versions "
            "of its main packages, the device it computes on (CPU or CUDA GPU) and whether the "
            "default language model is available offline. When no engine is found, says how to "
            "install one.")

    def initAlgorithm(self, config=None):
        self.addOutput(QgsProcessingOutputBoolean("ENGINE_FOUND", tr("Engine found")))
        self.addOutput(QgsProcessingOutputString("PYTHON", tr("Engine Python")))
        self.addOutput(QgsProcessingOutputString("ENGINE_VERSION", tr("Engine version")))
        self.addOutput(QgsProcessingOutputString("DEVICE", tr("Device")))
        self.addOutput(QgsProcessingOutputBoolean("DEFAULT_MODEL_AVAILABLE",
                                                  tr("Default language model available")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        try:
            location = engine_runner.locate_engine()
        except engine_runner.EngineNotFound as exc:
            feedback.reportError(str(exc.args[0]) if exc.args else str(exc), fatalError=False)
            return {"ENGINE_FOUND": False, "PYTHON": "", "ENGINE_VERSION": "", "DEVICE": "",
                    "DEFAULT_MODEL_AVAILABLE": False}
        feedback.pushInfo(f"Engine Python: {location.python} (found by {location.found_by})")
        feedback.pushInfo(f"Engine source: {location.source}")
        result = engine_runner.run_engine("check", [], feedback, location=location)
        metrics = result.metrics
        return {"ENGINE_FOUND": True, "PYTHON": str(metrics.get("python", location.python)),
                "ENGINE_VERSION": str(metrics.get("engine_version", "")),
                "DEVICE": str(metrics.get("device", "")),
                "DEFAULT_MODEL_AVAILABLE": bool(metrics.get("default_model_available"))}
