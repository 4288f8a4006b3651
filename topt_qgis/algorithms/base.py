"""What the ToPT algorithms share: the data parameters, the run options, the engine call."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsVectorLayer,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication

from .. import engine_runner
from .. import job as jobs

LANGUAGE_MODELS = ["smollm2", "minilm", "none", "custom"]  # stored by name
DEVICES = ["auto", "cpu", "cuda"]
PROTOCOLS = ["clean", "paper"]
MOBILITY_WEIGHTINGS = ["regions", "trips"]  # SRELConfig.mobility_weighting


def tr(text: str) -> str:
    return QCoreApplication.translate("ToPT", text)


class ToptAlgorithm(QgsProcessingAlgorithm):
    """Base of every ToPT algorithm: name, group, help, and the engine check in canExecute."""

    NAME = ""
    DISPLAY_NAME = ""
    GROUP = "Learn and predict"
    GROUP_ID = "learn"
    HELP = ""
    NEEDS_ENGINE = True

    def createInstance(self):
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return tr(self.GROUP)

    def groupId(self) -> str:
        return self.GROUP_ID

    def shortHelpString(self) -> str:
        return tr(self.HELP)

    def helpUrl(self) -> str:
        return "https://github.com/topt-qgis/topt-qgis#readme"

    def canExecute(self):
        if not self.NEEDS_ENGINE:
            return True, ""
        return engine_runner.engine_status()

    # ------------------------------------------------------------ parameters
    def add_data_parameters(self, *, targets: bool = True) -> None:
        """Region layer, id field, and one parameter group per data role (modeler-friendly)."""
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REGIONS", tr("Region layer (polygons)"), [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            "ID_FIELD", tr("Region id field (unique per region)"), parentLayerParameterName="REGIONS"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "POINTS", tr("Points of interest (points)"), [QgsProcessing.TypeVectorPoint],
            optional=True))
        self.addParameter(QgsProcessingParameterField(
            "POINT_CATEGORY_FIELD", tr("POI category field"), parentLayerParameterName="POINTS",
            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LANDUSE", tr("Land use (polygons or points)"),
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "LANDUSE_CLASS_FIELD", tr("Land-use class field"), parentLayerParameterName="LANDUSE",
            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "TRIPS", tr("Trips (origin-destination table by region id, or lines)"),
            [QgsProcessing.TypeVector], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "TRIP_ORIGIN_FIELD", tr("Trip origin region id field"), parentLayerParameterName="TRIPS",
            optional=True))
        self.addParameter(QgsProcessingParameterField(
            "TRIP_DESTINATION_FIELD", tr("Trip destination region id field"),
            parentLayerParameterName="TRIPS", optional=True))
        self.addParameter(QgsProcessingParameterField(
            "TRIP_WEIGHT_FIELD", tr("Trip count field (empty: one trip per row)"),
            parentLayerParameterName="TRIPS", type=QgsProcessingParameterField.Numeric,
            optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "RASTERS", tr("Rasters (zonal statistics per band)"), QgsProcessing.TypeRaster,
            optional=True))
        self.addParameter(QgsProcessingParameterField(
            "REGION_FIELDS", tr("Numeric region fields used as a view"),
            parentLayerParameterName="REGIONS", type=QgsProcessingParameterField.Numeric,
            allowMultiple=True, optional=True))
        if targets:
            self.addParameter(QgsProcessingParameterField(
                "TARGETS", tr("Target fields to predict (numeric; empty values are predicted)"),
                parentLayerParameterName="REGIONS", type=QgsProcessingParameterField.Numeric,
                allowMultiple=True, optional=True))
            self.addParameter(QgsProcessingParameterString(
                "TASK_DESCRIPTIONS", tr("Task descriptions, one per line: 'target: what it "
                                        "measures'"), multiLine=True, optional=True))
            self.addParameter(QgsProcessingParameterString(
                "TARGET_WEIGHTS", tr("Weight field per target, one per line: 'target: weight "
                                     "field' (e.g. 'crime_rate: population'; regions with a "
                                     "larger weight count more)"), multiLine=True, optional=True))
            self._advanced(QgsProcessingParameterBoolean(
                "AUTO_WEIGHT", tr("A target without a weight field: weight it by the numeric "
                                  "region field its errors shrink with (a rate's denominator), "
                                  "when the test inside the training regions finds one"), True))
        name_field = QgsProcessingParameterField(
            "NAME_FIELD", tr("Region name or address field (for the language model)"),
            parentLayerParameterName="REGIONS", optional=True)
        self._advanced(name_field)
        class_field = QgsProcessingParameterField(
            "CLASS_FIELD", tr("Land-use class field of the regions (clustering score)"),
            parentLayerParameterName="REGIONS", optional=True)
        self._advanced(class_field)
        self._advanced(QgsProcessingParameterNumber(
            "CLUSTERS", tr("Clusters for the clustering score (0: one per class present)"),
            QgsProcessingParameterNumber.Integer, 0, False, 0, 10000))

    def add_run_parameters(self, *, language_model: bool = True, folds: bool = True) -> None:
        """The language model and the tuning knobs (advanced)."""
        if language_model:
            self.addParameter(QgsProcessingParameterEnum(
                "LANGUAGE_MODEL", tr("Language model"), options=LANGUAGE_MODELS,
                defaultValue="smollm2", usesStaticStrings=True))
            self.addParameter(QgsProcessingParameterString(
                "LANGUAGE_MODEL_CUSTOM", tr("Custom language model (Hugging Face id or folder; "
                                            "with 'custom')"), optional=True))
        knobs = [
            QgsProcessingParameterNumber("EMBEDDING_SIZE", tr("Embedding size"),
                                         QgsProcessingParameterNumber.Integer, 144, False, 2, 4096),
            QgsProcessingParameterNumber("EPOCHS", tr("SREL epochs (0: the default schedule)"),
                                         QgsProcessingParameterNumber.Integer, 0, False, 0, 100000),
            QgsProcessingParameterEnum(
                "MOBILITY_WEIGHTING", tr("SREL trip loss (regions: each region's trips weigh the "
                                         "same; trips: each trip counts once, as HAFusion)"),
                options=MOBILITY_WEIGHTINGS, defaultValue="regions", usesStaticStrings=True),
            QgsProcessingParameterNumber("SEED", tr("Random seed"),
                                         QgsProcessingParameterNumber.Integer, 0, False, 0),
            QgsProcessingParameterEnum("DEVICE", tr("Device"), options=DEVICES,
                                       defaultValue="auto", usesStaticStrings=True),
        ]
        if folds:
            knobs += [
                QgsProcessingParameterNumber("FOLDS", tr("Cross-validation folds"),
                                             QgsProcessingParameterNumber.Integer, 10, False, 2,
                                             1000),
                QgsProcessingParameterBoolean("SHUFFLE", tr("Shuffle regions before folding"),
                                              True),
                QgsProcessingParameterNumber(
                    "INTERVAL_LEVEL", tr("Level of each prediction's interval, fields lo_ and "
                                         "hi_ (0: none)"),
                    QgsProcessingParameterNumber.Double, 0.9, False, 0.0, 0.99),
                QgsProcessingParameterEnum(
                    "PROTOCOL", tr("Evaluation protocol (clean: no test label touches any "
                                   "choice; paper: as published, optimistic)"),
                    options=PROTOCOLS, defaultValue="clean", usesStaticStrings=True),
            ]
        for knob in knobs:
            self._advanced(knob)

    def _advanced(self, parameter: QgsProcessingParameterDefinition) -> None:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    # ------------------------------------------------------------ the job
    def work_dir(self) -> Path:
        """A fresh folder for this run's job, copied layers and the engine's outputs."""
        return Path(tempfile.mkdtemp(prefix="topt-", dir=QgsProcessingUtils.tempFolder()))

    def region_layer(self, parameters: dict, context: QgsProcessingContext) -> QgsVectorLayer:
        layer = self.parameterAsVectorLayer(parameters, "REGIONS", context)
        if layer is None:
            raise QgsProcessingException(tr("The region layer could not be loaded."))
        return layer

    def build_job(self, parameters: dict, context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback, work_dir: Path, *,
                  targets: bool = True) -> dict[str, Any]:
        """The job dict of docs/engine-cli.md from this algorithm's parameters."""
        field = lambda name: self.parameterAsString(parameters, name, context) or None  # noqa: E731
        regions = jobs.vector_input(self, parameters, "REGIONS", context, feedback, work_dir)
        id_field = field("ID_FIELD")
        if not id_field:
            raise QgsProcessingException(tr("Choose the region id field (a field that is unique "
                                            "per region)."))
        regions.update(id_field=id_field, name_field=field("NAME_FIELD"),
                       fields=self.parameterAsFields(parameters, "REGION_FIELDS", context))
        job: dict[str, Any] = {"regions": regions, "points": [], "landuse": [], "trips": [],
                               "rasters": [], "targets": [], "classes": [],
                               "task_descriptions": {}, "target_weights": {},
                               "image_raster": None, "benchmark": None}
        points = jobs.vector_input(self, parameters, "POINTS", context, feedback, work_dir)
        if points:
            job["points"].append({**points, "category_field": field("POINT_CATEGORY_FIELD"),
                                  "view": "poi"})
        landuse = jobs.vector_input(self, parameters, "LANDUSE", context, feedback, work_dir)
        if landuse:
            if not field("LANDUSE_CLASS_FIELD"):
                raise QgsProcessingException(tr("Choose the land-use class field for the land-use "
                                                "layer."))
            job["landuse"].append({**landuse, "class_field": field("LANDUSE_CLASS_FIELD")})
        trips = jobs.vector_input(self, parameters, "TRIPS", context, feedback, work_dir)
        if trips:
            origin, destination = field("TRIP_ORIGIN_FIELD"), field("TRIP_DESTINATION_FIELD")
            if bool(origin) != bool(destination):
                raise QgsProcessingException(tr("Choose both the origin and the destination field "
                                                "of the trips table (or neither for a line layer)."))
            job["trips"].append({**trips, "origin_field": origin, "destination_field": destination,
                                 "weight_field": field("TRIP_WEIGHT_FIELD")})
        job["rasters"] = jobs.raster_inputs(self.parameterAsLayerList(parameters, "RASTERS", context))
        if targets:
            job["targets"] = self.parameterAsFields(parameters, "TARGETS", context)
            job["task_descriptions"] = jobs.parse_task_descriptions(
                self.parameterAsString(parameters, "TASK_DESCRIPTIONS", context), job["targets"])
            # The weight field is named only here, never added to the input fields (REGION_FIELDS).
            job["target_weights"] = jobs.parse_target_weights(
                self.parameterAsString(parameters, "TARGET_WEIGHTS", context), job["targets"],
                self.parameterAsSource(parameters, "REGIONS", context).fields())
            if not self.parameterAsBool(parameters, "AUTO_WEIGHT", context):
                job["predictor"] = {"auto_weight": False}
        if field("CLASS_FIELD"):
            job["classes"] = [field("CLASS_FIELD")]
            if self.parameterDefinition("CLUSTERS") is not None:
                clusters = self.parameterAsInt(parameters, "CLUSTERS", context)
                if clusters > 0:
                    job["clusters"] = clusters
        return job

    def run_options(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        """The run options of the job, by their long names (docs/engine-cli.md)."""
        options: dict[str, Any] = {}
        if self.parameterDefinition("LANGUAGE_MODEL") is not None:
            model = self.parameterAsEnumString(parameters, "LANGUAGE_MODEL", context) or "smollm2"
            if model == "custom":
                model = self.parameterAsString(parameters, "LANGUAGE_MODEL_CUSTOM", context).strip()
                if not model:
                    raise QgsProcessingException(tr("'custom' language model: enter a Hugging "
                                                    "Face model id or a model folder."))
            options["language_model"] = model
        number = lambda name: self.parameterAsInt(parameters, name, context)  # noqa: E731
        options["embedding_size"] = number("EMBEDDING_SIZE")
        if number("EPOCHS") > 0:
            options["epochs"] = number("EPOCHS")
        options["seed"] = number("SEED")
        weighting = self.parameterAsEnumString(parameters, "MOBILITY_WEIGHTING", context)
        if weighting and weighting != "regions":  # the engine's default needs no override
            options["srel"] = {"mobility_weighting": weighting}
        options["device"] = self.parameterAsEnumString(parameters, "DEVICE", context) or "auto"
        if self.parameterDefinition("FOLDS") is not None:
            options["folds"] = number("FOLDS")
            options["shuffle"] = self.parameterAsBool(parameters, "SHUFFLE", context)
            if self.parameterDefinition("INTERVAL_LEVEL") is not None:
                options["interval_level"] = self.parameterAsDouble(parameters, "INTERVAL_LEVEL",
                                                                   context)
            options["protocol"] = self.parameterAsEnumString(parameters, "PROTOCOL", context) \
                or "clean"
        return options

    def run_engine(self, command: str, job: dict[str, Any], work_dir: Path,
                   feedback: QgsProcessingFeedback,
                   extra: list[str] | None = None) -> engine_runner.EngineResult:
        out_dir = work_dir / "engine-output"
        job = {**job, "out_dir": str(out_dir), "overwrite": True}
        job_file = jobs.write_job(job, work_dir / "job.json")
        feedback.pushInfo(f"Job file: {job_file}")
        return engine_runner.run_engine(command, ["--job", str(job_file), *(extra or [])],
                                        feedback)


def engine_output(result: engine_runner.EngineResult, work_dir: Path, name: str,
                  default: str) -> Path:
    """An output the engine reported, or its documented place in the output folder."""
    path = result.outputs.get(name)
    candidate = Path(path) if path else work_dir / "engine-output" / default
    if not candidate.exists():
        raise QgsProcessingException(f"the engine reported success but did not write {default} "
                                     f"({candidate}).")
    return candidate


@contextmanager
def opened_file_layer(path: Path | str, name: str, table: str = "") -> Iterator[QgsVectorLayer]:
    """A layer of a file, open for one block and closed at its end, even when the block raises.

    A layer left to Python's garbage collector can outlive QGIS's data providers (a traceback
    keeps it until the interpreter ends) and then crashes the process as it closes its file.
    With `table`, its layer of that name, else the file's first layer.
    """
    layer = QgsVectorLayer(f"{path}|layername={table}", name, "ogr") if table else None
    if layer is None or not layer.isValid():
        layer = QgsVectorLayer(str(path), name, "ogr")
    try:
        yield layer
    finally:
        if not sip.isdeleted(layer):
            sip.delete(layer)


def copy_folder(source: Path, target: str) -> str:
    """Copies a folder (the model) to the user's chosen output folder."""
    destination = Path(target)
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, destination, dirs_exist_ok=True)
    return str(destination)
