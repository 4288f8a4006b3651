"""From a job (the job file's keys, see docs/engine-cli.md) to a RegionDataset.

    dataset = build_dataset({"regions": {"path": "city.gpkg", "layer": "regions",
                                         "id_field": "id"},
                             "points": [{"path": "city.gpkg", "layer": "pois",
                                         "category_field": "type"}],
                             "targets": ["crime"]}, log=print)
    print(prepare_summary_text(dataset))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from engine.data.aggregate import RegionIndex, landuse_view, point_counts
from engine.data.dataset import RegionDataset, View
from engine.data.layers import Report, parse_source
from engine.data.priors import PriorsConfig, geometric_priors, projected_crs
from engine.data.rasters import raster_view
from engine.data.regions import read_regions
from engine.data.trips import trips_view
from engine.errors import InputError

__all__ = ["DataSpec", "build_dataset", "parse_source", "prepare_summary_text"]


@dataclass
class DataSpec:
    """The data part of a job: which layers and fields make the regions, views and targets."""

    regions: dict  # {path, layer, id_field, name_field, fields}
    points: list[dict] = field(default_factory=list)  # [{path, layer, category_field, view}]
    landuse: list[dict] = field(default_factory=list)  # [{path, layer, class_field, view}]
    trips: list[dict] = field(default_factory=list)  # [{path, layer, origin_field, ...}]
    rasters: list[dict] = field(default_factory=list)  # [{path, stats, view}]
    targets: list[str] = field(default_factory=list)  # numeric target fields of the region layer
    # target -> the numeric field of its region weights (a rate's population...)
    target_weights: dict[str, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)  # class fields (land-use clustering)
    priors: PriorsConfig = field(default_factory=PriorsConfig)  # neighbours, distance buckets

    @classmethod
    def from_dict(cls, job: dict) -> DataSpec:
        """The data keys of a job dict; other keys (run options) are ignored."""
        regions = job.get("regions") or {}
        if not isinstance(regions, dict) or not regions.get("path"):
            raise InputError("no region layer was given", hint="Pass --regions PATH (polygons).")
        priors = job.get("priors") or {}
        try:
            priors_config = PriorsConfig(**priors)
        except TypeError as exc:
            raise InputError(f"unknown priors option: {exc}") from exc
        return cls(regions=dict(regions), points=_entries(job, "points"),
                   landuse=_entries(job, "landuse"), trips=_entries(job, "trips"),
                   rasters=_entries(job, "rasters"), targets=_names(job.get("targets")),
                   target_weights=_target_weights(job.get("target_weights")),
                   classes=_names(job.get("classes")), priors=priors_config)


def _target_weights(value) -> dict[str, str]:
    if not value:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                              for k, v in value.items()):
        raise InputError("the job key 'target_weights' must map target fields to weight fields",
                         hint='e.g. "target_weights": {"crime_rate": "population"}')
    return dict(value)


def _entries(job: dict, key: str) -> list[dict]:
    value = job.get(key) or []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InputError(f"the job key '{key}' must be a list of objects with a 'path'")
    return [dict(v) for v in value]


def _names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _source(entry: dict, what: str) -> tuple[str, str | None, dict[str, str]]:
    """(path, layer, options) of an entry whose path may itself be `PATH|layername=X|k=v`."""
    if not entry.get("path"):
        raise InputError(f"a {what} entry has no path", hint="Give the layer's file path.")
    path, layer, options = parse_source(str(entry["path"]))
    return path, entry.get("layer") or layer, options


def _unique_name(name: str, views: dict, report: Report) -> str:
    if name not in views:
        return name
    i = 2
    while f"{name}_{i}" in views:
        i += 1
    report.warn(f"two layers make the view '{name}': the second one is called '{name}_{i}'")
    return f"{name}_{i}"


def build_dataset(spec: dict | DataSpec, log: Callable[[str], None] | None = None) -> RegionDataset:
    """Read the layers of a job and build the RegionDataset (views, targets, classes, priors).

    Warnings (repaired geometries, reprojected layers, dropped points or trips) go to `log` and
    to `dataset.report`; bad input raises InputError naming the layer, the field and the fix.
    """
    spec = spec if isinstance(spec, DataSpec) else DataSpec.from_dict(spec)
    report = Report(log=log)
    path, layer, options = _source(spec.regions, "regions")
    regions = read_regions(
        path, layer, id_field=spec.regions.get("id_field") or options.get("id"),
        name_field=spec.regions.get("name_field") or options.get("name"),
        fields=_names(spec.regions.get("fields")), targets=spec.targets, classes=spec.classes,
        target_weights=spec.target_weights, report=report)
    crs = projected_crs(regions.frame.geometry)
    projected = regions.frame.geometry.to_crs(crs) if regions.frame.crs != crs else \
        regions.frame.geometry
    index = RegionIndex(projected.values, crs, regions.frame.crs)
    views: dict[str, View] = dict(regions.views)
    sources: dict = {"regions": regions.label}

    for entry in spec.points:
        p, lyr, opts = _source(entry, "points")
        name = _unique_name(entry.get("view") or opts.get("view") or "poi", views, report)
        views[name] = point_counts(
            p, lyr, index, category_field=entry.get("category_field") or opts.get("category"),
            view=name, report=report)
        sources[name] = p
    for entry in spec.landuse:
        p, lyr, opts = _source(entry, "land use")
        name = _unique_name(entry.get("view") or opts.get("view") or "landuse", views, report)
        views[name] = landuse_view(p, lyr, index,
                                   class_field=entry.get("class_field") or opts.get("class"),
                                   view=name, report=report)
        sources[name] = p
    for entry in spec.trips:
        p, lyr, opts = _source(entry, "trips")
        name = _unique_name(entry.get("view") or opts.get("view") or "mobility", views, report)
        views[name] = trips_view(
            p, lyr, index, regions.region_ids,
            origin_field=entry.get("origin_field") or opts.get("origin"),
            destination_field=entry.get("destination_field") or opts.get("destination"),
            weight_field=entry.get("weight_field") or opts.get("weight"), view=name,
            report=report)
        sources[name] = p
    for entry in spec.rasters:
        p, _, opts = _source(entry, "raster")
        stats = _names(entry.get("stats") or opts.get("stats")) or ["mean", "sum", "std"]
        name = _unique_name(entry.get("view") or opts.get("view") or "raster", views, report)
        views[name] = raster_view(p, regions.frame.geometry.values, regions.frame.crs,
                                  stats=stats, view=name, report=report)
        sources[name] = p

    if not views:
        raise InputError("no view was given: the regions need at least one source of features",
                         layer=regions.label,
                         hint="Add points (POIs), land use, trips, a raster or numeric fields.")
    flows = [v.matrix for v in views.values() if v.kind == "flow"]
    priors = geometric_priors(projected, flows, spec.priors)
    if crs != regions.frame.crs:
        report.note("projected", regions.label,
                    f"{regions.frame.crs.to_string()} -> {crs.to_string()} (distances, areas)")
    return RegionDataset(
        region_ids=regions.region_ids, views=views, priors=priors, targets=regions.targets,
        classes=regions.classes, target_weights=regions.target_weights,
        weight_fields=dict(spec.target_weights), names=regions.names,
        geometry=regions.frame.geometry.reset_index(drop=True),
        crs=regions.frame.crs.to_string(), source=sources, report=report.data)


def prepare_summary_text(dataset: RegionDataset) -> str:
    """What `prepare` prints: regions, views and widths, CRS used, what was dropped or repaired."""
    lines = [f"{dataset.n_regions} regions"
             + (f" from {dataset.source.get('regions')}" if dataset.source.get("regions") else "")
             + (f" (benchmark folder {dataset.source['benchmark']})"
                if dataset.source.get("benchmark") else "")]
    if dataset.crs or dataset.priors.crs:
        lines.append(f"CRS: layer {dataset.crs or 'none'}, distances and areas in "
                     f"{dataset.priors.crs or 'trip-graph units (no coordinates)'}")
    lines.append("views:")
    for name, view in dataset.views.items():
        if sp.issparse(view.matrix):
            detail = (f"{view.matrix.nnz} origin-destination pairs, "
                      f"{view.matrix.sum():,.0f} trips")
        else:
            total = np.nansum(view.matrix)
            detail = f"{view.width} columns" + (f", total {total:,.0f}"
                                                if view.kind == "counts" else "")
        lines.append(f"  {name} ({view.kind}): {detail}")
    for name, values in dataset.targets.items():
        known = int(np.isfinite(values).sum())
        lines.append(f"target {name}: {known} of {dataset.n_regions} regions labelled")
    for name, labels in dataset.classes.items():
        lines.append(f"classes {name}: {len(np.unique(labels))} classes")
    priors = dataset.priors
    lines.append(f"neighbours: {priors.neighbours.shape[1]} per region; adjacency: "
                 f"mean degree {float(np.mean(priors.degree)) if len(priors.degree) else 0:.1f}, "
                 f"{int((priors.degree == 0).sum())} region(s) without neighbours")
    lines += _report_lines(dataset.report)
    return "\n".join(lines)


def _report_lines(report: dict) -> list[str]:
    lines = []
    for section, verb in (("repaired", "repaired"), ("dropped", "left out")):
        for layer, counts in (report.get(section) or {}).items():
            parts = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items())
            lines.append(f"{verb} in {layer}: {parts}")
    for layer, change in (report.get("reprojected") or {}).items():
        lines.append(f"reprojected {layer}: {change}")
    for name, n in (report.get("unknown_as_zero") or {}).items():
        lines.append(f"target {name}: {n} zero value(s) read as unknown")
    if not any(report.get(k) for k in ("repaired", "dropped", "reprojected")):
        lines.append("nothing was repaired, reprojected or left out")
    return lines


def job_paths(job: dict) -> list[Path]:
    """Every file a job reads (for messages and caching)."""
    spec = DataSpec.from_dict(job)
    entries = [spec.regions, *spec.points, *spec.landuse, *spec.trips, *spec.rasters]
    return [Path(parse_source(str(e["path"]))[0]) for e in entries if e.get("path")]
