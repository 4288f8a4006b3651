"""encode_regions: descriptions + template -> vectors, with a per-region disk cache; images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_tiny, region_dataset

import engine.language.encode as encode_module
from engine.errors import InputError
from engine.language.encode import encode_regions
from engine.language.images import crop_region_images


class CountingModel:
    """Wraps a LanguageModel and counts the regions it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.encoded = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, prefix="", images=None, **kwargs):
        self.encoded += len(texts)
        return self.inner.encode(texts, prefix, images=images, **kwargs)


@pytest.fixture
def counting(tiny_causal_dir, monkeypatch):
    model = CountingModel(load_tiny(tiny_causal_dir))
    monkeypatch.setattr(encode_module, "_load", lambda name, device, root: model)
    return model


def test_cache_hits_on_second_call_and_misses_on_changed_text(counting, tmp_path):
    dataset = region_dataset()
    first = encode_regions(dataset, "crime", model="tiny", cache_dir=tmp_path)
    assert first.shape == (dataset.n_regions, 32) and counting.encoded == dataset.n_regions
    second = encode_regions(dataset, "crime", model="tiny", cache_dir=tmp_path)
    assert counting.encoded == dataset.n_regions  # nothing recomputed
    np.testing.assert_array_equal(first, second)
    dataset.names[3] = "Renamed Block"  # changes region 3's description only
    third = encode_regions(dataset, "crime", model="tiny", cache_dir=tmp_path)
    assert counting.encoded == dataset.n_regions + 1
    assert np.abs(third[3] - first[3]).max() > 1e-4
    np.testing.assert_array_equal(np.delete(third, 3, 0), np.delete(first, 3, 0))
    # Another task (another prompt) or another description recomputes every region.
    encode_regions(dataset, "crime", model="tiny", cache_dir=tmp_path,
                   description="violent crime only")
    assert counting.encoded == 2 * dataset.n_regions + 1


def test_cached_vectors_equal_fresh_ones(counting, tmp_path):
    dataset = region_dataset()
    cached = encode_regions(dataset, "income", model="tiny", cache_dir=tmp_path)
    fresh = encode_regions(dataset, "income", model="tiny", cache_dir=tmp_path / "other")
    np.testing.assert_allclose(cached, fresh, atol=1e-6)


def test_model_none_is_the_no_prompt_ablation(tmp_path):
    assert encode_regions(region_dataset(), "crime", model="none", cache_dir=tmp_path) is None


def _write_raster(path, count=3, dtype="uint16"):
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    data = rng.integers(100, 4000, size=(count, 200, 300)).astype(dtype)
    data[:, :, 150:] += 3000  # the east half is brighter
    transform = from_origin(584_500, 4_513_000, 10, 10)  # 10 m pixels over the regions
    with rasterio.open(path, "w", driver="GTiff", width=300, height=200, count=count,
                       dtype=dtype, crs="EPSG:32618", transform=transform) as out:
        out.write(data)


def _with_geometry(dataset, crs="EPSG:4326"):
    import geopandas as gpd
    from shapely.geometry import box

    squares = [box(x - 250, y - 250, x + 250, y + 250) for x, y in dataset.priors.centroids]
    dataset.geometry = gpd.GeoSeries(squares, crs="EPSG:32618").to_crs(crs)
    dataset.crs = crs
    return dataset


@pytest.mark.parametrize("count", [3, 1])
def test_crop_region_images(tmp_path, count):
    raster = tmp_path / "image.tif"
    _write_raster(raster, count=count)
    dataset = _with_geometry(region_dataset())  # lon/lat regions over a UTM raster
    images = crop_region_images(dataset, str(raster), size=32)
    assert len(images) == dataset.n_regions
    assert all(image.size == (32, 32) and image.mode == "RGB" for image in images)
    pixels = [np.asarray(image) for image in images]
    if count == 1:
        assert all((p[..., 0] == p[..., 1]).all() for p in pixels)  # grey replicated
    # Regions 0-1 lie in the raster's dark west half, 2-3 in the bright east half.
    assert pixels[0].mean() < pixels[3].mean()
    assert not np.array_equal(pixels[0], pixels[1])


def test_crop_needs_polygons(tmp_path):
    raster = tmp_path / "image.tif"
    _write_raster(raster)
    with pytest.raises(InputError, match="needs region polygons"):
        crop_region_images(region_dataset(), str(raster))


def test_images_reach_a_multimodal_model_and_its_cache_key(tiny_qwen2_vl_dir, tmp_path,
                                                           monkeypatch):
    model = CountingModel(load_tiny(tiny_qwen2_vl_dir))
    monkeypatch.setattr(encode_module, "_load", lambda name, device, root: model)
    raster = tmp_path / "image.tif"
    _write_raster(raster)
    dataset = _with_geometry(region_dataset(n=4))
    with_image = encode_regions(dataset, "crime", model="tiny", image_raster=str(raster),
                                cache_dir=tmp_path / "cache")
    text_only = encode_regions(dataset, "crime", model="tiny", cache_dir=tmp_path / "cache")
    assert model.encoded == 8  # the image is part of the key: no false cache hit
    assert np.abs(with_image - text_only).max() > 1e-4


def test_image_raster_with_a_text_only_model_is_an_input_error(counting, tmp_path):
    raster = tmp_path / "image.tif"
    _write_raster(raster)
    with pytest.raises(InputError, match="cannot read images"):
        encode_regions(_with_geometry(region_dataset()), "crime", model="tiny",
                       image_raster=str(raster), cache_dir=tmp_path)
    assert counting.encoded == 0
