"""The engine's job file (docs/engine-cli.md) made from a Processing algorithm's layers.

File-based layers (GeoPackage, Shapefile, GeoJSON... read by OGR, no filter, not "selected
features only") are passed by path. Anything else (memory layers, selections, filtered layers,
database layers, delimited text) is first written to a GeoPackage in the run's work folder, from
the thread-safe feature source Processing gives, so the engine always reads a plain file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

ENGINE_READABLE = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".sqlite", ".csv")


def layer_file(layer: QgsVectorLayer) -> tuple[str, str | None] | None:
    """(path, layer name) when the engine can read the layer's file as it is, else None."""
    if layer is None or layer.providerType() != "ogr" or layer.subsetString():
        return None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path") or ""
    if not path or not Path(path).is_file() or Path(path).suffix.lower() not in ENGINE_READABLE:
        return None
    return path, parts.get("layerName") or None


def needs_export(parameters: dict, name: str, layer: QgsVectorLayer | None) -> bool:
    value = parameters.get(name)
    if isinstance(value, QgsProcessingFeatureSourceDefinition):
        if value.selectedFeaturesOnly or value.featureLimit != -1:
            return True
        if getattr(value, "filterExpression", ""):
            return True
    return layer_file(layer) is None


def export_source(source, path: Path, layer_name: str, context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback) -> dict[str, str]:
    """Writes a feature source (selection and filters applied) to a GeoPackage layer."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer_name
    options.fileEncoding = "UTF-8"
    if path.exists():
        options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteLayer
    writer = QgsVectorFileWriter.create(str(path), source.fields(), source.wkbType(),
                                        source.sourceCrs(), context.transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"cannot write a copy of layer '{layer_name}' for the "
                                     f"engine to {path}: {writer.errorMessage()}")
    count = 0
    for feature in source.getFeatures():
        if feedback.isCanceled():
            break
        out = QgsFeature(feature)
        writer.addFeature(out, QgsFeatureSink.FastInsert)
        count += 1
    error = writer.hasError() != QgsVectorFileWriter.NoError
    message = writer.errorMessage()
    del writer
    if error:
        raise QgsProcessingException(f"writing a copy of layer '{layer_name}' failed: {message}")
    feedback.pushInfo(f"Layer '{layer_name}' ({count} features) copied to {path} for the engine.")
    return {"path": str(path), "layer": layer_name}


def vector_input(algorithm, parameters: dict, name: str, context: QgsProcessingContext,
                 feedback: QgsProcessingFeedback, work_dir: Path) -> dict[str, Any] | None:
    """{"path", "layer"} of a vector parameter as the engine will read it; None when unset."""
    if parameters.get(name) in (None, ""):
        return None
    layer = algorithm.parameterAsVectorLayer(parameters, name, context)
    if layer is None and parameters.get(name) is not None:
        source = algorithm.parameterAsSource(parameters, name, context)
        if source is None:
            return None
    if layer is not None and not needs_export(parameters, name, layer):
        path, layer_name = layer_file(layer)
        return {"path": path, "layer": layer_name}
    source = algorithm.parameterAsSource(parameters, name, context)
    if source is None:
        raise QgsProcessingException(f"the layer given as {name} could not be read.")
    return export_source(source, work_dir / "inputs.gpkg", name.lower(), context, feedback)


def raster_inputs(layers: list, stats: list[str] | None = None) -> list[dict[str, Any]]:
    """The engine's raster entries; a raster that is not a local file is explained."""
    rasters = []
    for layer in layers:
        if not isinstance(layer, QgsRasterLayer):
            continue
        path = layer.source().split("|")[0]
        if layer.providerType() != "gdal" or not Path(path).is_file():
            raise QgsProcessingException(
                f"raster layer '{layer.name()}' is not a local file (it comes from "
                f"{layer.providerType()}); save it as a GeoTIFF (right-click > Export > Save As) "
                "and use that.")
        rasters.append({"path": path, "stats": stats or ["mean", "sum", "std"]})
    return rasters


def _split_target_line(line: str) -> tuple[str, str] | None:
    """'target: text' or 'target = text' -> (target, text), split at the first of ':' and '='."""
    separators = [line.index(s) for s in ":=" if s in line]
    if not separators:
        return None
    at = min(separators)
    return line[:at].strip(), line[at + 1:].strip()


def parse_task_descriptions(text: str, targets: list[str]) -> dict[str, str]:
    """'target: what it means' lines -> {target: text}; a line with no known target is an error."""
    descriptions: dict[str, str] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        parts = _split_target_line(line)
        if parts is None:
            raise QgsProcessingException(
                f"task descriptions, line {number}: write 'target: what it measures', e.g. "
                f"'{targets[0] if targets else 'crime'}: crimes reported per region'.")
        target, description = parts
        if targets and target not in targets:
            raise QgsProcessingException(
                f"task descriptions, line {number}: '{target}' is not one of the chosen target "
                f"fields ({', '.join(targets)}).")
        descriptions[target] = description
    return descriptions


def parse_target_weights(text: str, targets: list[str], fields: QgsFields) -> dict[str, str]:
    """'target: weight field' lines -> {target: weight field}, checked against the region layer.

    `fields` are the region layer's fields: the weight must be one of them, numeric, and not the
    target itself. The engine checks the values (finite, above 0 where the target is labelled).
    """
    weights: dict[str, str] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"target weights, line {number}"
        parts = _split_target_line(line)
        if parts is None or not all(parts):
            raise QgsProcessingException(
                f"{where}: write 'target: weight field', e.g. "
                f"'{targets[0] if targets else 'crime_rate'}: population' (got '{line.strip()}').")
        target, weight = parts
        if target not in targets:
            chosen = ", ".join(targets) if targets else "none chosen"
            raise QgsProcessingException(
                f"{where}: '{target}' is not one of the chosen target fields ({chosen}); "
                "weigh only a field chosen as a target.")
        if target in weights:
            raise QgsProcessingException(
                f"{where}: '{target}' has a weight field already ('{weights[target]}'); keep "
                "one line per target.")
        index = fields.indexOf(weight)
        if index < 0:
            numeric = [f.name() for f in fields if f.isNumeric() and f.name() not in targets]
            raise QgsProcessingException(
                f"{where}: '{weight}' is not a field of the region layer; its numeric fields "
                f"are: {', '.join(numeric) or 'none'}.")
        if not fields.at(index).isNumeric():
            raise QgsProcessingException(
                f"{where}: the weight field '{weight}' is {fields.at(index).typeName()}, not "
                "numeric; choose a numeric field such as a population or a count.")
        if weight == target:
            raise QgsProcessingException(
                f"{where}: '{target}' cannot be its own weight; choose another field, such as "
                "the population the rate is computed over.")
        weights[target] = weight
    return weights


def write_job(job: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(job, indent=2, default=str) + "\n", encoding="utf-8")
    return path
