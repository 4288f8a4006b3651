"""Build region features (modeler step): engine `prepare`, the dataset summary as JSON."""

from __future__ import annotations

import shutil
from typing import Any

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterFileDestination

from .base import ToptAlgorithm, engine_output, tr


class BuildRegionFeaturesAlgorithm(ToptAlgorithm):
    NAME = "build_region_features"
    DISPLAY_NAME = "Build region features"
    GROUP = "Modeler steps"
    GROUP_ID = "steps"
    HELP = ("Reads the data layers and builds the per-region views the model learns from (POI "
            "counts per category, land-use shares, trips between regions, raster statistics), "
            "without training. Writes the dataset summary (regions, views and their widths, "
            "targets and how many regions are labelled) as JSON: a quick check of the inputs "
            "before a long run.")

    def initAlgorithm(self, config=None):
        self.add_data_parameters()
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", tr("Dataset summary"), tr("JSON files (*.json)")))
        self.addOutput(QgsProcessingOutputNumber("REGION_COUNT", tr("Regions")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        work_dir = self.work_dir()
        job = self.build_job(parameters, context, feedback, work_dir)
        result = self.run_engine("prepare", job, work_dir, feedback)
        summary = engine_output(result, work_dir, "dataset", "dataset.json")
        target = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        shutil.copy2(summary, target)
        count = result.metrics.get("n_regions", result.metrics.get("regions"))
        return {"OUTPUT": target, "REGION_COUNT": count}
