"""Region semantic vectors for one task: descriptions + task prompt -> language model -> cache.

`encode_regions(dataset, target)` describes every region, builds the target's task prompt,
encodes both with a frozen language model and keeps each region's vector on disk, keyed by a hash
of (model fingerprint, prompt, region text, image bytes). A second run reads the files; a changed
description recomputes only the regions it changes.

`model="none"` is the no-prompt ablation: it returns None, and the caller runs Prompt4RE without
its semantic branch (region embeddings only).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.data.dataset import RegionDataset
from engine.errors import InputError
from engine.language.describe import DescriptionConfig, describe_regions
from engine.language.models import LanguageModel, default_cache_dir, load_language_model
from engine.language.templates import task_template

Progress = Callable[[float, str], None]  # (fraction in [0, 1], message)

_LOADED: dict[tuple[str, str, str], LanguageModel] = {}  # models kept for the next target


def encode_regions(
    dataset: RegionDataset,
    target_name: str,
    *,
    model: str | LanguageModel = "smollm2",
    description: str | None = None,
    image_raster: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    progress: Progress | None = None,
    describe: DescriptionConfig | None = None,
    worker_threads: int | None = None,
) -> np.ndarray | None:
    """(N, hidden) float32 semantic vectors of the regions for the task `target_name`.

    Args:
        dataset: the regions.
        target_name: the target's field name; picks the task prompt (see `task_template`).
        model: "smollm2" (default), "minilm", a Hugging Face id or folder, a loaded
            LanguageModel, or "none" (returns None: the no-prompt ablation).
        description: the user's words about the target, added to the prompt.
        image_raster: a raster layer to crop one image per region from (multimodal models).
        cache_dir: where models and vectors are kept (default $TOPT_CACHE_DIR or ~/.cache/topt).
        device: "cpu", "cuda" or "auto".
        batch_size: regions per forward pass.
        progress: called with (fraction, message).
        describe: what the region descriptions contain.
        worker_threads: CPU: torch threads per batch (see `LanguageModel.encode`).
    """
    if isinstance(model, str) and model.strip().lower() == "none":
        return None
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    language_model = model if isinstance(model, LanguageModel) else _load(model, device, cache_root)
    texts = describe_regions(dataset, describe)
    images = None
    if image_raster:
        from engine.language.images import crop_region_images

        if not language_model.accepts_images:
            raise InputError(f"the language model '{language_model.name}' cannot read images",
                             layer=str(image_raster),
                             hint="Choose a multimodal model (Qwen2-VL, Qwen2.5-VL, LLaVA) or "
                             "leave the image raster empty.")

        images = crop_region_images(dataset, image_raster)
    prefix = task_template(target_name, description, has_image=images is not None)
    return encode_cached(language_model, texts, prefix, images, cache_root / "vectors",
                         batch_size=batch_size, progress=progress, worker_threads=worker_threads)


def encode_cached(language_model: LanguageModel, texts: Sequence[str], prefix: str,
                  images: Sequence | None, vector_dir: Path, batch_size: int = 16,
                  progress: Progress | None = None,
                  worker_threads: int | None = None) -> np.ndarray:
    """Encode with a per-region disk cache: only regions whose key has no file are computed."""
    keys = [region_key(language_model.fingerprint, prefix, text,
                       images[k] if images is not None else None)
            for k, text in enumerate(texts)]
    out = np.zeros((len(texts), language_model.hidden_size), dtype=np.float32)
    missing = []
    for k, key in enumerate(keys):
        vector = _read(vector_dir, key, language_model.hidden_size)
        if vector is None:
            missing.append(k)
        else:
            out[k] = vector
    if progress:
        progress(0.0, f"{len(texts) - len(missing)} of {len(texts)} region vectors cached")
    if missing:
        def report(done: int, total: int) -> None:
            if progress:
                progress(done / total, f"encoded {done} of {total} regions")

        computed = language_model.encode(
            [texts[k] for k in missing], prefix,
            images=[images[k] for k in missing] if images is not None else None,
            batch_size=batch_size, progress=report, worker_threads=worker_threads)
        for row, k in enumerate(missing):
            out[k] = computed[row]
            _write(vector_dir, keys[k], computed[row])
    if progress:
        progress(1.0, f"{len(texts)} region vectors ready")
    return out


def region_key(fingerprint: str, prefix: str, text: str, image=None) -> str:
    """sha256 of everything that determines a region's vector."""
    digest = hashlib.sha256()
    for part in (fingerprint, prefix, text):
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    if image is not None:
        digest.update(_image_bytes(image))
    return digest.hexdigest()


def _image_bytes(image) -> bytes:
    """The pixels of a PIL image (mode, size and raw bytes), or of an array."""
    if hasattr(image, "tobytes") and hasattr(image, "mode"):
        header = f"{image.mode}:{image.size}".encode()
        return header + image.tobytes()
    buffer = io.BytesIO()
    array = np.ascontiguousarray(image)
    buffer.write(f"{array.dtype}:{array.shape}".encode())
    buffer.write(array.tobytes())
    return buffer.getvalue()


def _path(vector_dir: Path, key: str) -> Path:
    return vector_dir / key[:2] / f"{key}.npy"


def _read(vector_dir: Path, key: str, width: int) -> np.ndarray | None:
    path = _path(vector_dir, key)
    if not path.exists():
        return None
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged file: compute again
    if vector.shape != (width,) or vector.dtype != np.float32:
        return None
    return vector


def _write(vector_dir: Path, key: str, vector: np.ndarray) -> None:
    path = _path(vector_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(staging, np.asarray(vector, dtype=np.float32), allow_pickle=False)
    os.replace(staging, path)


def _load(name: str, device: str, cache_root: Path) -> LanguageModel:
    key = (name, device, str(cache_root))
    if key not in _LOADED:
        _LOADED.clear()  # keep one model in memory at a time
        _LOADED[key] = load_language_model(name, device=device, cache_dir=cache_root)
    return _LOADED[key]
