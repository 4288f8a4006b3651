"""One image per region, cropped from a raster layer (aerial or satellite imagery)."""

from __future__ import annotations

import numpy as np

from engine.data.dataset import RegionDataset
from engine.data.rasters import open_raster
from engine.errors import InputError


def crop_region_images(dataset: RegionDataset, raster_path: str, size: int = 224) -> list:
    """One RGB PIL image (size x size) per region, in region order.

    Each region's bounds, reprojected into the raster's CRS and widened to a square around the
    region's centre, are read through a rasterio window (resampled to `size`; outside the raster
    reads as black). Bands 1-3 give RGB; a single band is grey, replicated. Values are scaled to
    uint8 with the 2nd and 98th percentiles of the whole raster (the same scale for every region);
    uint8 rasters are used as they are.
    """
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    if dataset.geometry is None:
        raise InputError("an image raster needs region polygons to crop from",
                         layer=raster_path,
                         hint="Load the regions from a polygon layer, or leave the image raster "
                         "empty.")
    with open_raster(raster_path) as source:
        geometry = dataset.geometry
        if geometry.crs is None and dataset.crs:
            geometry = geometry.set_crs(dataset.crs)
        bounds = geometry.to_crs(source.crs).bounds.to_numpy()  # (N, 4) minx, miny, maxx, maxy
        bands = [1, 2, 3] if source.count >= 3 else [1]
        low, high = _scale(source, bands)
        images = []
        for minx, miny, maxx, maxy in bounds:
            half = max(maxx - minx, maxy - miny) / 2 or abs(source.res[0]) * size / 2
            cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
            window = from_bounds(cx - half, cy - half, cx + half, cy + half, source.transform)
            data = source.read(bands, window=window, out_shape=(len(bands), size, size),
                               boundless=True, fill_value=0, masked=True,
                               resampling=Resampling.bilinear)  # (bands, size, size)
            pixels = _to_uint8(data, low, high)
            if pixels.shape[0] == 1:
                pixels = np.repeat(pixels, 3, axis=0)  # grey -> RGB
            images.append(Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))))
        return images


def _scale(source, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) values mapped to 0 and 255."""
    count = len(bands)
    if source.dtypes[0] == "uint8":
        return np.zeros(count), np.full(count, 255.0)
    step = max(1, max(source.width, source.height) // 1024)
    overview = source.read(bands, out_shape=(count, max(1, source.height // step),
                                             max(1, source.width // step)), masked=True)
    low, high = np.zeros(count), np.ones(count)
    for b in range(count):
        values = overview[b].compressed() if np.ma.isMaskedArray(overview) else overview[b].ravel()
        values = values[np.isfinite(values)]
        if values.size:
            low[b], high[b] = np.percentile(values, [2, 98])
            if high[b] <= low[b]:
                high[b] = low[b] + 1
    return low, high


def _to_uint8(data: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(bands, H, W) values -> uint8, nodata and NaN as 0."""
    filled = np.ma.filled(np.ma.masked_invalid(np.ma.asarray(data, dtype=np.float64)), np.nan)
    scaled = (filled - low[:, None, None]) / (high - low)[:, None, None] * 255.0
    return np.nan_to_num(np.clip(scaled, 0, 255), nan=0.0).astype(np.uint8)
