"""The "ToPT" Processing provider (id `topt`)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.build_region_features import BuildRegionFeaturesAlgorithm
from .algorithms.check_engine import CheckEngineAlgorithm
from .algorithms.install_engine import InstallEngineAlgorithm
from .algorithms.learn_and_predict import LearnAndPredictAlgorithm
from .algorithms.predict_with_model import PredictWithModelAlgorithm
from .algorithms.train_model import TrainModelAlgorithm
from .algorithms.write_fields_into_layer import WriteFieldsIntoLayerAlgorithm

ALGORITHMS = (LearnAndPredictAlgorithm, BuildRegionFeaturesAlgorithm, TrainModelAlgorithm,
              PredictWithModelAlgorithm, WriteFieldsIntoLayerAlgorithm, CheckEngineAlgorithm,
              InstallEngineAlgorithm)
PLUGIN_DIR = Path(__file__).resolve().parent
# The packaged plugin carries resources/ inside its folder; a checkout has it beside topt_qgis/.
ICON = next((d / "resources" / "icon.svg" for d in (PLUGIN_DIR, PLUGIN_DIR.parent)
             if (d / "resources" / "icon.svg").is_file()), PLUGIN_DIR / "resources" / "icon.svg")


class ToptProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "topt"

    def name(self) -> str:
        return "ToPT"

    def longName(self) -> str:
        return "ToPT: task-oriented urban region embeddings"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:
        return str(ICON)

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
