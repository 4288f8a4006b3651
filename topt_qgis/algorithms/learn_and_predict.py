"""Learn region embeddings and predict: the one-click algorithm (engine `train`, or `embed`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterVectorDestination,
    QgsProject,
    QgsVectorLayer,
)
from qgis.PyQt import sip

from .. import writeback
from .base import ToptAlgorithm, copy_folder, engine_output, opened_file_layer, tr


class GraduatedStyle(QgsProcessingLayerPostProcessorInterface):
    """Gives the output layer a graduated style on its first prediction field once loaded, with
    the extrapolated predictions outlined."""

    keep_alive: list[GraduatedStyle] = []  # Processing holds a raw pointer; Python must keep it

    def __init__(self, field_name: str, flag_field: str | None = None) -> None:
        super().__init__()
        self.field_name = field_name
        self.flag_field = flag_field

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if isinstance(layer, QgsVectorLayer):
            writeback.apply_graduated_style(layer, self.field_name, flag_field=self.flag_field)

    @classmethod
    def create(cls, field_name: str, flag_field: str | None = None) -> GraduatedStyle:
        made = cls(field_name, flag_field)
        cls.keep_alive = [*cls.keep_alive[-15:], made]
        return made


class LearnAndPredictAlgorithm(ToptAlgorithm):
    NAME = "learn_and_predict"
    DISPLAY_NAME = "Learn region embeddings and predict"
    HELP = (
        "Learns an embedding of every region from the data layers (points of interest, land use, "
        "trips, rasters, numeric fields) with SREL, then predicts each target field from that "
        "embedding, the raw data and a language model's reading of the task (Prompt4RE), "
        "combined by validation inside the training regions only. Regions whose "
        "target is empty get a prediction; labelled regions get an honest cross-validated one. "
        "A rate or ratio may name its weight field ('crime_rate: population'): regions with a "
        "larger weight count more, and weighted R² is reported beside the plain one.\n\n"
        "Outputs: a new layer with the region fields plus emb_000... (the embedding), "
        "pred_[target], fold_[target] and ext_[target] (1: the region's data lie beyond every "
        "training region's, 2: its prediction lies outside the training labels' range, 3: both; "
        "such predictions are extrapolations, to read with care; the output's style outlines "
        "them in dashed red), lo_[target] and hi_[target] (the prediction's 90% interval, from "
        "the cross-validated errors: about 9 in 10 regions like these hold their value inside "
        "it; the report says how many labelled regions did); the trained model folder (with "
        "metrics.json); and an "
        "HTML report of the evaluation. With 'Write the new fields into the region layer' the "
        "fields are also added to the region layer itself, matched by region id.\n\n"
        "Without target fields, only the embedding is learned.")
    COMMAND = "train"

    def initAlgorithm(self, config=None):
        self.add_data_parameters()
        self.add_run_parameters()
        self.addParameter(QgsProcessingParameterBoolean(
            "WRITE_BACK", tr("Write the new fields into the region layer too"), False))
        self.addParameter(QgsProcessingParameterBoolean(
            "OVERWRITE_FIELDS", tr("Overwrite fields of the same name in the region layer"), False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", tr("Regions with embeddings and predictions")))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "MODEL_OUTPUT", tr("Model folder"), optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "REPORT", tr("Report"), tr("HTML files (*.html)"), optional=True,
            createByDefault=True))
        self.addOutput(QgsProcessingOutputString("FIELD_NAMES", tr("Result field -> layer field")))

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        work_dir = self.work_dir()
        job = self.build_job(parameters, context, feedback, work_dir)
        job.update(self.run_options(parameters, context))
        command = self.COMMAND if job["targets"] else "embed"
        if command == "embed":
            feedback.pushInfo("No target field chosen: learning the region embedding only.")
        result = self.run_engine(command, job, work_dir, feedback)
        if feedback.isCanceled():
            raise QgsProcessingException("The ToPT run was cancelled; nothing was written.")
        return self.publish(parameters, context, feedback, work_dir, result)

    def publish(self, parameters, context, feedback, work_dir: Path, result) -> dict[str, Any]:
        """Copies the engine's outputs to the user's outputs; plans the write-back."""
        regions_file = engine_output(result, work_dir, "regions", "regions.gpkg")
        source = self.parameterAsSource(parameters, "REGIONS", context)
        if source is None:
            feedback.reportError(
                "The region layer was removed from the project while ToPT ran: the output layer "
                "holds the regions' geometry, their id and the new fields, but not the layer's "
                "other fields, and nothing was written into the region layer.", fatalError=False)
        id_field = self.parameterAsString(parameters, "ID_FIELD", context)
        output_path = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        with opened_file_layer(regions_file, "result", "regions") as result_layer:
            if not result_layer.isValid():
                raise QgsProcessingException(f"the engine's result {regions_file} cannot be read.")
            result_id = id_field if id_field in result_layer.fields().names() else "region_id"
            regions, regions_id = (source, id_field) if source is not None else \
                (result_layer, result_id)
            report = writeback.write_output_layer(
                regions, regions_id, result_layer, result_id, output_path,
                context.transformContext(), feedback=feedback)
        outputs: dict[str, Any] = {
            "OUTPUT": output_path,
            "FIELD_NAMES": ", ".join(f"{k}->{v}" for k, v in report.renamed().items())}
        prediction = next((k for k in report.field_names if k.startswith("pred_")), None)
        if prediction:
            flag = report.field_names.get("ext_" + prediction[len("pred_"):])
            self._style_output(output_path, report.field_names[prediction], context, flag)

        model_target = self.parameterAsString(parameters, "MODEL_OUTPUT", context)
        model_dir = result.outputs.get("model") or work_dir / "engine-output" / "model"
        if model_target and Path(model_dir).is_dir():
            outputs["MODEL_OUTPUT"] = copy_folder(Path(model_dir), model_target)
            metrics = result.outputs.get("metrics") or work_dir / "engine-output" / "metrics.json"
            if Path(metrics).is_file():
                shutil.copy2(metrics, Path(model_target) / "metrics.json")
        report_target = self.parameterAsFileOutput(parameters, "REPORT", context)
        report_file = result.outputs.get("report") or work_dir / "engine-output" / "report.html"
        if report_target and Path(report_file).is_file():
            shutil.copy2(report_file, report_target)
            outputs["REPORT"] = report_target

        if source is not None and self.parameterDefinition("WRITE_BACK") is not None and \
                self.parameterAsBool(parameters, "WRITE_BACK", context):
            layer = self.region_layer(parameters, context)
            project = context.project() or QgsProject.instance()
            in_project = project.mapLayer(layer.id()) is not None
            self._write_back = ((layer, layer.id(), in_project), id_field, str(regions_file),
                                result_id,
                                self.parameterAsBool(parameters, "OVERWRITE_FIELDS", context))
        return outputs

    @staticmethod
    def _live_layer(planned: tuple, context) -> QgsVectorLayer | None:
        """The region layer at write-back time, or None when it left the project meanwhile."""
        layer, layer_id, in_project = planned
        if in_project:
            project = context.project() or QgsProject.instance()
            return project.mapLayer(layer_id)
        return None if sip.isdeleted(layer) else layer

    def _style_output(self, output_path: str, field_name: str, context,
                      flag_field: str | None = None) -> None:
        with opened_file_layer(output_path, "output") as layer:
            if layer.isValid() and writeback.apply_graduated_style(layer, field_name,
                                                                   flag_field=flag_field):
                if output_path.lower().endswith(".gpkg"):
                    about = "graduated on " + field_name
                    if flag_field:
                        about += f"; dashed red outline: extrapolated ({flag_field} > 0)"
                    layer.saveStyleToDatabase("topt", about, True, "")
        if context.willLoadLayerOnCompletion(output_path):
            details = context.layerToLoadOnCompletionDetails(output_path)
            details.setPostProcessor(GraduatedStyle.create(field_name, flag_field))

    def postProcessAlgorithm(self, context, feedback):
        """Writes the fields into the region layer on the main thread, after a successful run."""
        plan = getattr(self, "_write_back", None)
        if not plan:
            return {}
        layer, id_field, regions_file, result_id, overwrite = plan
        layer = self._live_layer(layer, context)
        if layer is None:
            feedback.reportError(
                "The region layer was removed from the project while ToPT ran, so its fields "
                "were not written; the results are in the output layer.", fatalError=False)
            return {}
        with opened_file_layer(regions_file, "result", "regions") as result_layer:
            try:
                writeback.write_fields_into_layer(layer, id_field, result_layer, result_id,
                                                  overwrite=overwrite, feedback=feedback)
            except writeback.WriteBackError as exc:
                feedback.reportError(f"The region layer was not changed: {exc}",
                                     fatalError=False)
        return {}
