"""Predict with model (modeler step): a trained model folder applied to the regions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterFile,
    QgsProcessingParameterVectorDestination,
)

from .base import tr
from .learn_and_predict import LearnAndPredictAlgorithm


class PredictWithModelAlgorithm(LearnAndPredictAlgorithm):
    NAME = "predict_with_model"
    DISPLAY_NAME = "Predict with model"
    GROUP = "Modeler steps"
    GROUP_ID = "steps"
    HELP = ("Applies a model made by 'Train model' (or 'Learn region embeddings and predict') to "
            "a region layer: the same data layers and fields as at training are needed. The "
            "output layer gets pred_[target] for every target the model learned, with "
            "ext_[target] (an extrapolation) and lo_[target] / hi_[target] (the interval the "
            "model was calibrated to at training; where it is scaled by a weight field, that "
            "field must be among the numeric region fields).")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", tr("Model folder"), behavior=QgsProcessingParameterFile.Folder))
        self.add_data_parameters(targets=False)
        self.add_run_parameters(language_model=False, folds=False)
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", tr("Regions with predictions")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        model = self.parameterAsFile(parameters, "MODEL", context)
        if not model or not Path(model).is_dir():
            raise QgsProcessingException(f"the model folder '{model}' does not exist. Choose the "
                                         "folder written by 'Train model'.")
        work_dir = self.work_dir()
        job = self.build_job(parameters, context, feedback, work_dir, targets=False)
        job.update(self.run_options(parameters, context))
        job["model"] = model
        result = self.run_engine("predict", job, work_dir, feedback, ["--model", model])
        return self.publish(parameters, context, feedback, work_dir, result)
