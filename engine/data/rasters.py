"""Zonal statistics of a raster per band per region (a "continuous" view).

One pass over the raster in blocks of rows: the regions are burnt into each block as a label
image (pixel centre inside the polygon), and per-region sums, sums of squares and pixel counts are
accumulated with bincount. Cost is linear in the pixels read, whatever the number of regions; a
region smaller than a pixel takes the value of the pixel under its representative point.
"""

from __future__ import annotations

import numpy as np
import shapely

from engine.data.dataset import View
from engine.data.layers import Report, _check_file
from engine.errors import InputError

STATS = ("mean", "sum", "std", "count")
BLOCK_PIXELS = 4_000_000  # pixels read per block (memory: a few tens of MB)


def open_raster(path: str, label: str | None = None):
    """An open rasterio dataset with a CRS, or an InputError that names the raster."""
    import rasterio

    label = label or str(path)
    try:
        source = rasterio.open(path)
    except Exception as exc:
        raise InputError(f"cannot open the raster: {exc}", layer=label,
                         hint="Use a GeoTIFF (or another raster GDAL can read).") from exc
    if source.crs is None:
        source.close()
        raise InputError("the raster has no coordinate reference system (CRS)", layer=label,
                         hint="Assign its CRS in QGIS (Raster > Projections > Assign).")
    return source


def raster_view(path: str, regions_geometry, regions_crs, *, stats: list[str] | None = None,
                view: str = "raster", report: Report | None = None) -> View:
    """(N, bands * len(stats)) zonal statistics, columns `band{b}_{stat}`; NaN where no pixel."""
    from affine import Affine
    from rasterio.features import rasterize
    from rasterio.windows import Window

    report = report or Report()
    stats = list(stats or ["mean", "sum", "std"])
    unknown = [s for s in stats if s not in STATS]
    if unknown:
        raise InputError(f"unknown raster statistic {', '.join(unknown)}", layer=str(path),
                         hint=f"Use some of: {', '.join(STATS)}.")
    label = _check_file(path).name
    with open_raster(path, label) as source:
        geometry = np.asarray(regions_geometry)
        if source.crs != regions_crs:  # move the polygons, never resample the raster
            import geopandas as gpd

            geometry = np.asarray(gpd.GeoSeries(geometry, crs=regions_crs).to_crs(source.crs).values)
            report.note("reprojected", label, f"regions measured in the raster's "
                        f"{source.crs.to_string()}")
            report.warn(f"raster '{label}' is in {source.crs.to_string()}, the region layer in "
                        f"{regions_crs.to_string()}: the regions were reprojected onto it")
        n = len(geometry)
        xmin, ymin, xmax, ymax = shapely.total_bounds(geometry)
        window = _pixel_window(source, xmin, ymin, xmax, ymax)
        if window is None:
            raise InputError("the raster does not overlap the regions", layer=label,
                             hint="Check that the raster and the regions cover the same area "
                             "(and that their CRSs are set correctly).")
        bands = source.count
        total = np.zeros((bands, n))
        squares = np.zeros((bands, n))
        count = np.zeros((bands, n))
        rows_per_block = max(1, BLOCK_PIXELS // max(1, int(window.width)))
        shapes = list(zip(geometry, range(1, n + 1), strict=True))
        tree = shapely.STRtree(geometry)
        row0, row1 = int(window.row_off), int(window.row_off + window.height)
        for top in range(row0, row1, rows_per_block):
            block = Window(window.col_off, top, window.width, min(rows_per_block, row1 - top))
            transform = source.transform @ Affine.translation(block.col_off, block.row_off)
            x0, y0 = transform @ (0, 0)
            x1, y1 = transform @ (block.width, block.height)
            bounds = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            near = tree.query(shapely.box(*bounds))
            if len(near) == 0:
                continue
            labels = rasterize([shapes[i] for i in near], out_shape=(int(block.height),
                               int(block.width)), transform=transform, fill=0, dtype="int32")
            inside = labels > 0
            if not inside.any():
                continue
            region = labels[inside] - 1
            data = source.read(window=block, masked=True)  # (bands, rows, cols)
            for b in range(bands):
                values = data[b][inside]
                ok = ~np.ma.getmaskarray(values) & np.isfinite(np.ma.getdata(values))
                v = np.ma.getdata(values)[ok].astype(np.float64)
                r = region[ok]
                total[b] += np.bincount(r, weights=v, minlength=n)
                squares[b] += np.bincount(r, weights=v * v, minlength=n)
                count[b] += np.bincount(r, minlength=n)
        _small_regions(source, geometry, total, squares, count)
    if not count.any():
        raise InputError("the raster has no valid pixel inside any region", layer=label,
                         hint="Check the raster's extent and its nodata value.")
    missing = int((count[0] == 0).sum())
    if missing:
        report.count("dropped", label, "regions_without_pixels", missing)
        report.warn(f"raster '{label}': {missing} region(s) have no valid pixel; their "
                    "statistics are unknown (NaN)")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        std = np.sqrt(np.maximum(np.where(count > 0, squares / count, np.nan) - mean * mean, 0.0))
    table = {"mean": mean, "sum": np.where(count > 0, total, np.nan), "std": std,
             "count": count}
    columns, blocks = [], []
    for b in range(bands):
        for s in stats:
            columns.append(f"band{b + 1}_{s}")
            blocks.append(table[s][b])
    return View(view, "continuous", np.column_stack(blocks), columns)  # (N, bands * stats)


def _pixel_window(source, xmin: float, ymin: float, xmax: float, ymax: float):
    """The whole-pixel window of the raster covering the bounds, or None outside the raster."""
    from rasterio.windows import Window

    inverse = ~source.transform
    corners = [inverse @ (x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    col0, col1 = max(0, int(np.floor(min(cols)))), min(source.width, int(np.ceil(max(cols))))
    row0, row1 = max(0, int(np.floor(min(rows)))), min(source.height, int(np.ceil(max(rows))))
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _small_regions(source, geometry, total, squares, count) -> None:
    """Regions that hold no pixel centre take the pixel under their representative point."""
    empty = np.flatnonzero(count.sum(axis=0) == 0)
    if len(empty) == 0:
        return
    points = shapely.point_on_surface(geometry[empty])
    left, bottom, right, top = source.bounds
    x, y = shapely.get_x(points), shapely.get_y(points)
    on_raster = (x >= min(left, right)) & (x < max(left, right)) & (y >= min(bottom, top)) \
        & (y < max(bottom, top))
    empty, points = empty[on_raster], points[on_raster]
    if len(empty) == 0:
        return
    xy = list(zip(shapely.get_x(points), shapely.get_y(points), strict=True))
    for j, values in zip(empty, source.sample(xy, masked=True), strict=True):
        for b in range(source.count):
            if np.ma.is_masked(values[b]) or not np.isfinite(values[b]):
                continue
            v = float(values[b])
            total[b, j], squares[b, j], count[b, j] = v, v * v, 1.0
