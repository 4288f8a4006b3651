"""Writes the engine's result fields (emb_*, pred_*, fold_*, ext_*, lo_*, hi_*) into QGIS layers,
by region id.

Two ways out: `write_fields_into_layer` adds the fields to an existing layer in place (one bulk
addAttributes, then one changeAttributeValues for all features), and `write_output_layer` makes
a new layer: the region layer's features and fields plus the result fields. Rows are matched by
the region id, never by order. Shapefiles (dBASE: 10-character field names) get shortened,
unique names, and the mapping is reported. Nothing is written before every check has passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from qgis.core import (
    QgsExpression,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGraduatedSymbolRenderer,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProperty,
    QgsSimpleLineSymbolLayer,
    QgsStyle,
    QgsSymbol,
    QgsSymbolLayer,
    QgsVectorDataProvider,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import Qt, QVariant
from qgis.PyQt.QtGui import QColor

DBF_NAME_LENGTH = 10  # the dBASE limit on field names (Shapefiles)
RESULT_PREFIXES = ("emb_", "pred_", "fold_", "ext_", "lo_", "hi_")


class WriteBackError(QgsProcessingException):
    """The fields cannot be written; the message says which layer or field and what to do."""


@dataclass
class WriteBackReport:
    """What a write-back did.

    Args:
        field_names: result field -> the field name it got in the layer (differs when shortened).
        matched: region features that received values.
        unmatched: region features whose id is not in the result (their new fields stay empty).
        unknown_ids: ids in the result that are not in the region layer (ignored).
        seconds: time spent writing.
    """

    field_names: dict[str, str] = field(default_factory=dict)
    matched: int = 0
    unmatched: int = 0
    unknown_ids: int = 0
    seconds: float = 0.0

    def renamed(self) -> dict[str, str]:
        return {k: v for k, v in self.field_names.items() if k != v}


def region_key(value: Any) -> str | None:
    """A region id as a comparable key: 7, 7.0 and "7" are one region; NULL is None."""
    if value is None or (hasattr(value, "isNull") and value.isNull()):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def is_dbf_layer(layer: QgsVectorLayer) -> bool:
    """True for Shapefile/dBASE layers, whose field names are limited to 10 characters."""
    storage = layer.dataProvider().storageType() if layer.dataProvider() else ""
    source = layer.source().split("|")[0].lower()
    return storage == "ESRI Shapefile" or source.endswith((".shp", ".dbf"))


def plan_field_names(names: list[str], existing: list[str], max_length: int | None) -> dict[str, str]:
    """The field name each result field gets: unchanged when it fits, else shortened uniquely.

    A name that already exists in the layer keeps that name (the caller decides whether it may be
    overwritten). Shortened names keep the prefix (emb_, pred_, fold_, ext_, lo_, hi_) where they can and end in a
    number when two would collide: pred_service_call -> pred_servi, pred_service_time -> pred_serv1.
    """
    taken = {n.lower() for n in existing}
    planned: dict[str, str] = {}
    for name in names:
        if max_length is None or len(name) <= max_length:
            planned[name] = name
            taken.add(name.lower())
            continue
        candidate = name[:max_length]
        counter = 1
        while candidate.lower() in taken:
            suffix = str(counter)
            candidate = name[:max_length - len(suffix)] + suffix
            counter += 1
        planned[name] = candidate
        taken.add(candidate.lower())
    return planned


def result_fields(result: QgsVectorLayer, id_field: str, wanted: list[str] | None = None) -> list[QgsField]:
    """The result layer's fields to copy: `wanted`, or every emb_/pred_/fold_/ext_/lo_/hi_ field."""
    fields = result.fields()
    if id_field not in fields.names():
        raise WriteBackError(f"the result layer has no region id field '{id_field}'; it cannot be "
                             "matched to the regions. Choose the id field the run used.")
    chosen = []
    names = wanted if wanted else [n for n in fields.names() if n.startswith(RESULT_PREFIXES)]
    missing = [n for n in names if n not in fields.names()]
    if missing:
        raise WriteBackError(f"the result layer has no field {', '.join(missing)}. "
                             f"Its fields are: {', '.join(fields.names())}.")
    for name in names:
        if name != id_field:
            chosen.append(QgsField(fields.field(name)))
    if not chosen:
        raise WriteBackError("the result layer holds no embedding or prediction fields to write.")
    return chosen


def read_result_values(result: QgsVectorLayer, id_field: str,
                       names: list[str]) -> dict[str, list[Any]]:
    """region key -> the values of `names` in the result layer; duplicate ids are an error."""
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
    request.setSubsetOfAttributes([id_field, *names], result.fields())
    indexes = [result.fields().indexOf(n) for n in names]
    id_index = result.fields().indexOf(id_field)
    values: dict[str, list[Any]] = {}
    for feature in result.getFeatures(request):
        attributes = feature.attributes()
        key = region_key(attributes[id_index])
        if key is None:
            continue
        if key in values:
            raise WriteBackError(f"the region id {key} appears twice in the result layer; "
                                 f"the id field '{id_field}' must be unique.")
        values[key] = [_plain(attributes[i]) for i in indexes]
    return values


def _plain(value: Any) -> Any:
    return None if value is None or (hasattr(value, "isNull") and value.isNull()) else value


def check_writable(layer: QgsVectorLayer) -> None:
    """Raises WriteBackError when new fields cannot be added to the layer in place."""
    provider = layer.dataProvider()
    capabilities = provider.capabilities() if provider else 0
    needed = QgsVectorDataProvider.AddAttributes | QgsVectorDataProvider.ChangeAttributeValues
    if layer.readOnly() or (capabilities & needed) != needed:
        raise WriteBackError(
            f"layer '{layer.name()}' is read-only ({layer.source().split('|')[0]}), so the new "
            "fields cannot be written into it. The new output layer has them; or save the layer "
            "as a GeoPackage you can write to and run again.")
    if layer.isEditable():
        raise WriteBackError(f"layer '{layer.name()}' is being edited. Save or discard its edits "
                             "first, then run again.")


def write_fields_into_layer(layer: QgsVectorLayer, layer_id_field: str, result: QgsVectorLayer,
                            result_id_field: str, fields: list[str] | None = None, *,
                            overwrite: bool = False,
                            feedback: QgsProcessingFeedback | None = None) -> WriteBackReport:
    """Adds the result's fields to `layer` in place, matched by region id.

    Args:
        layer: the region layer to write into (GeoPackage, Shapefile, memory, ...).
        layer_id_field: its region id field.
        result: the engine's result layer (regions.gpkg).
        result_id_field: the region id field in the result.
        fields: the result fields to copy (default: every emb_/pred_/fold_ field).
        overwrite: replace the values of fields that already exist; refused otherwise.
        feedback: receives the name mapping and counts.

    Returns:
        The name mapping and how many features were matched.
    """
    import time

    started = time.monotonic()
    feedback = feedback or QgsProcessingFeedback()
    check_writable(layer)
    if layer_id_field not in layer.fields().names():
        raise WriteBackError(f"layer '{layer.name()}' has no field '{layer_id_field}'. Choose "
                             "the region id field the run used.")
    new_fields = result_fields(result, result_id_field, fields)
    source_names = [f.name() for f in new_fields]
    max_length = DBF_NAME_LENGTH if is_dbf_layer(layer) else None
    existing = layer.fields().names()
    planned = plan_field_names(source_names, existing, max_length)
    clashes = [planned[n] for n in source_names if planned[n] in existing]
    if clashes and not overwrite:
        shown = ", ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else "")
        raise WriteBackError(
            f"layer '{layer.name()}' already has the field(s) {shown}. Choose 'overwrite "
            "existing fields' to replace their values, or remove those fields first.")
    values = read_result_values(result, result_id_field, source_names)

    provider = layer.dataProvider()
    to_add = []
    for source_field in new_fields:
        name = planned[source_field.name()]
        if name not in existing:
            to_add.append(_output_field(source_field, name, max_length is not None))
    if to_add and not provider.addAttributes(to_add):
        raise WriteBackError(f"layer '{layer.name()}' refused the new fields: "
                             f"{'; '.join(provider.errors()) or 'no reason given'}.")
    layer.updateFields()
    layer_fields = layer.fields()
    indexes = [layer_fields.indexOf(planned[n]) for n in source_names]
    if min(indexes) < 0:
        _remove_fields(layer, [f.name() for f in to_add])
        raise WriteBackError(f"layer '{layer.name()}' did not keep the new fields.")

    report = WriteBackReport(field_names=planned)
    changes: dict[int, dict[int, Any]] = {}
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
    request.setSubsetOfAttributes([layer_id_field], layer_fields)
    id_index = layer_fields.indexOf(layer_id_field)
    seen = set()
    for feature in layer.getFeatures(request):
        key = region_key(feature.attributes()[id_index])
        row = values.get(key)
        if row is None:
            report.unmatched += 1
            continue
        seen.add(key)
        changes[feature.id()] = dict(zip(indexes, row, strict=True))
    report.matched = len(changes)
    report.unknown_ids = len(set(values) - seen)
    if report.matched == 0:
        _remove_fields(layer, [f.name() for f in to_add])
        raise WriteBackError(
            f"no region of layer '{layer.name()}' has an id ('{layer_id_field}') that is in the "
            f"result ('{result_id_field}'). Choose the id field the run used.")
    if not provider.changeAttributeValues(changes):
        errors = "; ".join(provider.errors()) or "no reason given"
        _remove_fields(layer, [f.name() for f in to_add])
        raise WriteBackError(f"writing the values into layer '{layer.name()}' failed: {errors}.")
    layer.reload()
    report.seconds = time.monotonic() - started
    _report(report, layer.name(), feedback)
    return report


def _output_field(source: QgsField, name: str, dbf: bool) -> QgsField:
    made = QgsField(source)
    made.setName(name)
    if dbf and made.type() == QVariant.Double:
        made.setLength(24)
        made.setPrecision(15)
    return made


def _remove_fields(layer: QgsVectorLayer, names: list[str]) -> None:
    """Undoes addAttributes after a failure, so the layer is left as it was."""
    indexes = [layer.fields().indexOf(n) for n in names if layer.fields().indexOf(n) >= 0]
    if indexes:
        layer.dataProvider().deleteAttributes(indexes)
        layer.updateFields()


def _report(report: WriteBackReport, layer_name: str, feedback: QgsProcessingFeedback) -> None:
    feedback.pushInfo(f"Wrote {len(report.field_names)} fields into {report.matched} features of "
                      f"'{layer_name}' in {report.seconds:.1f} s.")
    if report.renamed():
        mapping = ", ".join(f"{k} -> {v}" for k, v in report.renamed().items())
        feedback.pushInfo(f"Field names shortened for the 10-character limit: {mapping}")
    if report.unmatched:
        feedback.pushInfo(f"{report.unmatched} features have an id that is not in the result; "
                          "their new fields are empty.")
    if report.unknown_ids:
        feedback.pushInfo(f"{report.unknown_ids} ids in the result are not in the layer.")


def write_output_layer(regions, regions_id_field: str, result: QgsVectorLayer,
                       result_id_field: str, path: str, transform_context, *,
                       feedback: QgsProcessingFeedback | None = None) -> WriteBackReport:
    """A new layer at `path`: the regions' geometry and fields plus the result fields by id.

    `regions` is a feature source (a layer, or Processing's source with its selection applied).

    A region field with the same name as a result field (say pred_crime from an earlier run) is
    replaced by the new one. The format follows the file extension (.gpkg, .shp, .geojson...).
    """
    import os
    import time

    started = time.monotonic()
    feedback = feedback or QgsProcessingFeedback()
    new_fields = result_fields(result, result_id_field)
    source_names = [f.name() for f in new_fields]
    dbf = path.lower().endswith((".shp", ".dbf"))
    kept = [f for f in regions.fields() if f.name() not in source_names
            and not (dbf and f.name().lower() == "fid")]
    max_length = DBF_NAME_LENGTH if dbf else None
    planned = plan_field_names(source_names, [f.name() for f in kept], max_length)
    out_fields = QgsFields()
    for region_field in kept:
        out_fields.append(QgsField(region_field))
    for source_field in new_fields:
        out_fields.append(_output_field(source_field, planned[source_field.name()], dbf))
    values = read_result_values(result, result_id_field, source_names)

    options = QgsVectorFileWriter.SaveVectorOptions()
    extension = os.path.splitext(path)[1].lstrip(".")
    options.driverName = QgsVectorFileWriter.driverForExtension(extension) or "GPKG"
    options.fileEncoding = "UTF-8"
    options.layerName = os.path.splitext(os.path.basename(path))[0]
    writer = QgsVectorFileWriter.create(path, out_fields, regions.wkbType(), regions.sourceCrs(),
                                        transform_context, options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise WriteBackError(f"cannot create the output layer {path}: {writer.errorMessage()}")
    kept_indexes = [regions.fields().indexOf(f.name()) for f in kept]
    id_index = regions.fields().indexOf(regions_id_field)
    if id_index < 0:
        raise WriteBackError(f"layer '{regions.sourceName()}' has no field '{regions_id_field}'.")
    report = WriteBackReport(field_names=planned)
    empty = [None] * len(source_names)
    seen = set()
    for feature in regions.getFeatures():
        attributes = feature.attributes()
        key = region_key(attributes[id_index])
        row = values.get(key)
        if row is None:
            report.unmatched += 1
            row = empty
        else:
            report.matched += 1
            seen.add(key)
        out = QgsFeature(out_fields)
        out.setGeometry(feature.geometry())
        out.setAttributes([attributes[i] for i in kept_indexes] + list(row))
        writer.addFeature(out, QgsFeatureSink.FastInsert)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        message = writer.errorMessage()
        del writer
        raise WriteBackError(f"writing the output layer {path} failed: {message}")
    del writer  # closes the file
    report.unknown_ids = len(set(values) - seen)
    report.seconds = time.monotonic() - started
    _report(report, os.path.basename(path), feedback)
    return report


EXTRAPOLATION_OUTLINE = QColor(215, 25, 28)  # the dashed red outline of extrapolated regions


def apply_graduated_style(layer: QgsVectorLayer, field_name: str, classes: int = 5,
                          flag_field: str | None = None) -> bool:
    """A quantile graduated style (Viridis) on a numeric field; False when it cannot be made.

    With `flag_field` (a prediction's ext_ field), polygons whose flag is non-zero, the
    extrapolated predictions, also get a dashed red outline.
    """
    if layer is None or layer.fields().indexOf(field_name) < 0:
        return False
    renderer = QgsGraduatedSymbolRenderer(field_name)
    symbol = QgsSymbol.defaultSymbol(layer.geometryType())
    if symbol is None:
        return False
    if (flag_field and layer.fields().indexOf(flag_field) >= 0
            and layer.geometryType() == QgsWkbTypes.PolygonGeometry):
        outline = QgsSimpleLineSymbolLayer(EXTRAPOLATION_OUTLINE, 0.8)
        outline.setPenStyle(Qt.DashLine)
        outline.setLocked(True)  # the colour ramp recolours every unlocked layer of a class
        outline.setRenderingPass(1)  # drawn after every fill, so no neighbour covers it
        expression = f"coalesce({QgsExpression.quotedColumnRef(flag_field)}, 0) > 0"
        outline.setDataDefinedProperty(QgsSymbolLayer.PropertyLayerEnabled,
                                       QgsProperty.fromExpression(expression))
        symbol.appendSymbolLayer(outline)
        renderer.setUsingSymbolLevels(True)
    renderer.setSourceSymbol(symbol)
    ramp = QgsStyle.defaultStyle().colorRamp("Viridis")
    if ramp is not None:
        renderer.setSourceColorRamp(ramp)
    try:
        from qgis.core import QgsClassificationQuantile

        renderer.setClassificationMethod(QgsClassificationQuantile())
        renderer.updateClasses(layer, classes)
    except ImportError:  # pragma: no cover - QGIS older than 3.10
        renderer.updateClasses(layer, QgsGraduatedSymbolRenderer.Quantile, classes)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return True


def first_prediction_field(layer: QgsVectorLayer) -> str | None:
    return next((n for n in layer.fields().names() if n.startswith("pred_")), None)
