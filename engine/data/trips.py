"""Trips between regions: an N x N sparse origin-destination matrix (row = origin).

From an OD table (CSV, or a GeoPackage attribute table) whose origin and destination fields hold
region ids, or from a line layer whose first and last vertices are located in the regions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely

from engine.data.aggregate import RegionIndex
from engine.data.dataset import View
from engine.data.layers import Report, id_keys, numeric_field, read_vector, require_field, to_crs
from engine.errors import InputError


def trips_view(path: str, layer: str | None, regions: RegionIndex, region_ids: np.ndarray, *,
               origin_field: str | None, destination_field: str | None,
               weight_field: str | None, view: str, report: Report) -> View:
    """The flow view (N x N CSR, float64) of one trips source."""
    frame, label = read_vector(path, layer, want=("table", "line"))
    if len(frame) == 0:
        raise InputError("the trips layer is empty", layer=label,
                         hint="Choose a table or line layer with trips.")
    has_lines = "geometry" in frame.columns and hasattr(frame, "crs")
    if origin_field or destination_field:
        if not (origin_field and destination_field):
            raise InputError("an OD table needs both an origin and a destination field",
                             layer=label, field=origin_field or destination_field,
                             hint="Write PATH|origin=FIELD|destination=FIELD[|weight=FIELD].")
        origin, destination = _od_rows(frame, label, region_ids, origin_field, destination_field,
                                       report)
    elif has_lines:
        origin, destination = _line_rows(frame, label, regions, report)
    else:
        columns = ", ".join(map(str, frame.columns))
        raise InputError("the trips table needs origin and destination fields", layer=label,
                         hint=f"Write PATH|origin=FIELD|destination=FIELD; fields: {columns}.")
    if weight_field:
        weight = numeric_field(frame, weight_field, label, "trip weight")
    else:
        weight = np.ones(len(frame))
    bad = ~np.isfinite(weight) | (weight < 0)
    if bad.any():
        report.count("dropped", label, "null_or_negative_weight", int(bad.sum()))
        report.warn(f"layer '{label}': {int(bad.sum())} trip row(s) with a null or negative "
                    f"'{weight_field}' were left out")
    keep = (origin >= 0) & (destination >= 0) & ~bad
    n = len(region_ids)
    matrix = sp.csr_matrix((weight[keep], (origin[keep], destination[keep])), shape=(n, n),
                           dtype=np.float64)  # duplicates summed
    matrix.eliminate_zeros()
    return View(view, "flow", matrix, [str(i) for i in region_ids])


def _od_rows(frame, label, region_ids, origin_field, destination_field, report):
    index = pd.Index(id_keys(region_ids))
    origin_keys = id_keys(require_field(frame, origin_field, label, "trip origin"))
    destination_keys = id_keys(require_field(frame, destination_field, label, "trip destination"))
    origin = index.get_indexer(origin_keys)
    destination = index.get_indexer(destination_keys)
    unmatched = (origin < 0) | (destination < 0)
    if unmatched.all():
        example = origin_keys[0] if origin[0] < 0 else destination_keys[0]
        raise InputError(f"no trip's origin and destination both match a region id (e.g. "
                         f"{example!r}; region ids look like {', '.join(index[:3])})",
                         layer=label, field=origin_field if origin[0] < 0 else destination_field,
                         hint="The origin/destination fields must hold the region layer's ids "
                         "(set the region id field to the one they refer to).")
    if unmatched.any():
        report.count("dropped", label, "unknown_region_ids", int(unmatched.sum()))
        report.warn(f"layer '{label}': {int(unmatched.sum())} of {len(frame)} trip row(s) refer "
                    "to ids that are not in the region layer and were left out")
    return origin, destination


def _line_rows(frame, label, regions: RegionIndex, report):
    frame = to_crs(frame, regions.crs, label, report, regions.layer_crs)
    types = set(frame.geometry.geom_type.dropna().unique())
    if not types <= {"LineString", "MultiLineString"}:
        raise InputError(f"a trips layer without origin/destination fields must hold lines, it "
                         f"holds {', '.join(sorted(types))}", layer=label,
                         hint="Give an OD table with |origin=FIELD|destination=FIELD, or lines.")
    lines = np.asarray(frame.geometry.values)
    multi = shapely.get_type_id(lines) == 5
    first, last = lines.copy(), lines.copy()
    if multi.any():
        first[multi] = shapely.get_geometry(lines[multi], 0)
        last[multi] = shapely.get_geometry(lines[multi], -1)
    start = regions.locate(shapely.get_point(first, 0))
    end = regions.locate(shapely.get_point(last, -1))
    outside = (start < 0) | (end < 0)
    if outside.all():
        raise InputError("no trip line starts and ends inside the regions", layer=label,
                         hint="Check that the lines and the regions cover the same area.")
    if outside.any():
        report.count("dropped", label, "outside_regions", int(outside.sum()))
        report.warn(f"layer '{label}': {int(outside.sum())} of {len(frame)} trip line(s) start "
                    "or end outside every region and were left out")
    return start, end
