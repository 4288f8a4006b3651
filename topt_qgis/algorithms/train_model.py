"""Train a model (modeler step): SREL + Prompt4RE; outputs the model folder, metrics and a layer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingOutputFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterVectorDestination,
)

from .base import tr
from .learn_and_predict import LearnAndPredictAlgorithm


class TrainModelAlgorithm(LearnAndPredictAlgorithm):
    NAME = "train_model"
    DISPLAY_NAME = "Train model"
    GROUP = "Modeler steps"
    GROUP_ID = "steps"
    HELP = ("Trains SREL and Prompt4RE on the data layers and target fields (engine 'train'). "
            "Outputs the model folder (safetensors + JSON), the metrics (JSON) and the regions "
            "with embeddings and predictions. Chain it with 'Predict with model' in the "
            "graphical modeler.")

    def initAlgorithm(self, config=None):
        self.add_data_parameters()
        self.add_run_parameters()
        self.addParameter(QgsProcessingParameterFolderDestination("MODEL_OUTPUT", tr("Model folder")))
        self.addParameter(QgsProcessingParameterFileDestination(
            "METRICS", tr("Metrics"), tr("JSON files (*.json)")))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", tr("Regions with embeddings and predictions")))
        self.addOutput(QgsProcessingOutputFile("REPORT", tr("Report")))

    def publish(self, parameters, context, feedback, work_dir: Path, result) -> dict[str, Any]:
        outputs = super().publish(parameters, context, feedback, work_dir, result)
        metrics_target = self.parameterAsFileOutput(parameters, "METRICS", context)
        metrics = result.outputs.get("metrics") or work_dir / "engine-output" / "metrics.json"
        if metrics_target and Path(metrics).is_file():
            shutil.copy2(metrics, metrics_target)
            outputs["METRICS"] = metrics_target
        return outputs
