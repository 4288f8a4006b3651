"""Files the engine writes: the regions GeoPackage with embeddings and predictions, JSON.

Everything is written into a staging folder first and moved into place only when the whole run
succeeded, so a failed or cancelled run leaves no half-written output behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from engine.data.dataset import RegionDataset
from engine.errors import InputError

EMBEDDING_PREFIX = "emb_"
PREDICTION_PREFIX = "pred_"
FOLD_PREFIX = "fold_"
EXTRAPOLATION_PREFIX = "ext_"  # 0; 1 inputs beyond the training regions'; 2 prediction outside
# the training labels' range; 3 both (engine.training.predictor.TrainingReach)
LOW_PREFIX, HIGH_PREFIX = "lo_", "hi_"  # a prediction's interval (engine.training.intervals)


def output_id_field(job: dict, default: str = "region_id") -> str:
    """The id field of the output layer: the region layer's own, else `default`."""
    return (job.get("regions") or {}).get("id_field") or default


def embedding_field_names(width: int) -> list[str]:
    return [f"{EMBEDDING_PREFIX}{i:03d}" for i in range(width)]


@contextmanager
def staged_output(out_dir: Path, overwrite: bool, names: list[str]):
    """Yields a staging folder; on success its files replace `names` in out_dir, else it vanishes."""
    out_dir = Path(out_dir)
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise InputError(
            f"the output folder already holds {', '.join(existing)}",
            layer=str(out_dir), hint="Choose another --out-dir or pass --overwrite.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".topt-partial-", dir=out_dir))
    except OSError as exc:
        raise InputError(f"cannot write into the output folder: {exc.strerror}",
                         layer=str(out_dir), hint="Choose a folder you can write to.") from exc
    try:
        yield stage
        # A cancel (SIGTERM/SIGINT) waits until every output is in place: all or nothing.
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            for item in sorted(stage.iterdir()):
                target = out_dir / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
    except InputError:
        raise
    except Exception as exc:
        if _disk_full(exc, out_dir):
            raise InputError("the disk holding the output folder is full; nothing was written",
                             layer=str(out_dir),
                             hint="Free some space, or choose an --out-dir on another disk.") from exc
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """ENOSPC, or (GDAL hides it behind its own errors) less than 1 MB left where we wrote."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < 1024**2
    except OSError:
        return False


def check_writable(out_dir: Path) -> None:
    """Fails at once, before any training, when the output folder cannot be written."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".topt-probe-", dir=out_dir))
        probe.rmdir()
    except OSError as exc:
        raise InputError(f"cannot write into the output folder: {exc.strerror}",
                         layer=str(out_dir), hint="Choose a folder you can write to.") from exc


def write_json(path: Path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, default=_plain) + "\n", encoding="utf-8")


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def region_table(dataset: RegionDataset, embeddings: np.ndarray | None,
                 predictions: dict[str, np.ndarray], folds: dict[str, np.ndarray],
                 id_field: str, extrapolated: dict[str, np.ndarray] | None = None,
                 intervals: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                 ) -> dict[str, np.ndarray]:
    """Columns of the output layer, in order: id, embeddings, predictions, folds, extrapolation
    flags, the predictions' intervals (low, high; NaN, a NULL, where there is none)."""
    columns: dict[str, np.ndarray] = {id_field: np.asarray(dataset.region_ids)}
    if embeddings is not None:
        for name, column in zip(embedding_field_names(embeddings.shape[1]), embeddings.T, strict=True):
            columns[name] = column.astype(np.float64)
    for target, values in predictions.items():
        columns[f"{PREDICTION_PREFIX}{target}"] = np.asarray(values, dtype=np.float64)
    for target, values in folds.items():
        columns[f"{FOLD_PREFIX}{target}"] = np.asarray(values, dtype=np.int32)
    for target, values in (extrapolated or {}).items():
        columns[f"{EXTRAPOLATION_PREFIX}{target}"] = np.asarray(values, dtype=np.int32)
    for target, (low, high) in (intervals or {}).items():
        columns[f"{LOW_PREFIX}{target}"] = np.asarray(low, dtype=np.float64)
        columns[f"{HIGH_PREFIX}{target}"] = np.asarray(high, dtype=np.float64)
    return columns


def write_regions(path: Path, dataset: RegionDataset, columns: dict[str, np.ndarray]) -> Path:
    """The regions with their new fields: a GeoPackage layer `regions` (or a CSV without geometry)."""
    import pandas as pd

    frame = pd.DataFrame(columns)
    if dataset.geometry is None:
        path = Path(path).with_suffix(".csv")
        frame.to_csv(path, index=False)
        return path
    import geopandas as gpd

    layer = gpd.GeoDataFrame(frame, geometry=np.asarray(dataset.geometry), crs=dataset.crs)
    layer.to_file(path, layer="regions", driver="GPKG", engine="pyogrio")
    return Path(path)
