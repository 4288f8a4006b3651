"""Install engine: the engine's own Python environment in the user's QGIS profile folder."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingException, QgsProcessingOutputString

from .. import engine_runner
from .base import ToptAlgorithm, tr


class InstallEngineAlgorithm(ToptAlgorithm):
    NAME = "install_engine"
    DISPLAY_NAME = "Install engine"
    GROUP = "Engine"
    GROUP_ID = "engine"
    NEEDS_ENGINE = False
    HELP = ("Creates the engine's Python environment in your QGIS profile folder "
            "(<profile>/topt/engine-venv) and installs the pinned packages the engine needs "
            "(PyTorch, PyTorch Geometric, transformers, geopandas...; a few GB, from the Python "
            "package index). QGIS's own Python is not touched. Run it once; a cancelled or failed "
            "install leaves nothing half-made behind.")

    def initAlgorithm(self, config=None):
        self.addOutput(QgsProcessingOutputString("PYTHON", tr("Engine Python")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        from ..engine_installer import EngineInstallError, install_engine

        source = engine_runner.find_engine_source()
        if source is None:
            raise QgsProcessingException("The engine's source folder is missing from the plugin; "
                                         "reinstall the ToPT plugin.")

        def progress(fraction: float, message: str) -> None:
            feedback.setProgress(100.0 * fraction)
            feedback.pushInfo(message)

        try:
            python = install_engine(engine_runner.engine_venv_dir(), source / "engine", progress,
                                    feedback.isCanceled)
        except EngineInstallError as exc:
            if exc.details:
                engine_runner.log(exc.details)
            raise QgsProcessingException(exc.describe()) from exc
        return {"PYTHON": python}
