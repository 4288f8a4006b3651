"""Write fields into layer (modeler step): result fields copied into a layer in place, by id."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterField,
    QgsProcessingParameterVectorLayer,
)

from .. import writeback
from .base import ToptAlgorithm, tr


class WriteFieldsIntoLayerAlgorithm(ToptAlgorithm):
    NAME = "write_fields_into_layer"
    DISPLAY_NAME = "Write fields into layer"
    GROUP = "Modeler steps"
    GROUP_ID = "steps"
    NEEDS_ENGINE = False
    HELP = ("Adds fields of a result layer (by default every emb_, pred_, fold_, ext_, lo_ and "
            "hi_ field) to a layer in place, matching features by region id, never by order. "
            "Shapefile field names are shortened to 10 characters (the mapping is reported). "
            "Fields that already exist are refused unless 'Overwrite' is chosen. Nothing is "
            "changed when a check fails.")

    def flags(self):
        # In-place edits of a project layer belong on the main thread.
        return super().flags() | QgsProcessingAlgorithm.FlagNoThreading

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterVectorLayer(
            "INPUT", tr("Layer to write into"), [QgsProcessing.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterField(
            "ID_FIELD", tr("Its region id field"), parentLayerParameterName="INPUT"))
        self.addParameter(QgsProcessingParameterVectorLayer(
            "RESULT", tr("Result layer (from a ToPT algorithm)"),
            [QgsProcessing.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterField(
            "RESULT_ID_FIELD", tr("Result region id field"), parentLayerParameterName="RESULT"))
        self.addParameter(QgsProcessingParameterField(
            "FIELDS", tr("Fields to copy (empty: every emb_, pred_, fold_, ext_, lo_ and hi_ "
                                "field)"),
            parentLayerParameterName="RESULT", allowMultiple=True, optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "OVERWRITE", tr("Overwrite fields that already exist"), False))
        self.addOutput(QgsProcessingOutputVectorLayer("OUTPUT", tr("Updated layer")))
        self.addOutput(QgsProcessingOutputString("FIELD_NAMES", tr("Result field -> layer field")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        layer = self.parameterAsVectorLayer(parameters, "INPUT", context)
        result = self.parameterAsVectorLayer(parameters, "RESULT", context)
        if layer is None or result is None:
            raise QgsProcessingException(tr("The layer or the result layer could not be loaded."))
        report = writeback.write_fields_into_layer(
            layer, self.parameterAsString(parameters, "ID_FIELD", context), result,
            self.parameterAsString(parameters, "RESULT_ID_FIELD", context),
            self.parameterAsFields(parameters, "FIELDS", context) or None,
            overwrite=self.parameterAsBool(parameters, "OVERWRITE", context), feedback=feedback)
        return {"OUTPUT": layer.id() if context.project() and context.project().mapLayer(
                    layer.id()) else layer.source(),
                "FIELD_NAMES": ", ".join(f"{k}->{v}" for k, v in report.field_names.items())}
