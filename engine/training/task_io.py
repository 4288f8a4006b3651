"""Saving and loading a fitted per-task model: safetensors for arrays, JSON for the rest.

A fitted task is a blend of predictors (engine/training/predictor.py). Each predictor that can
be saved exposes `state() -> (arrays, meta)`; `load_task_model` rebuilds the blend from them.
No pickle anywhere: the QGIS plugin store refuses it, and a model file must not run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import InputError

CONFIG = "task.json"
WEIGHTS = "task.safetensors"
REACH = "reach"  # the arrays of the training reach (extrapolation flags), beside the predictors'


def save_task_model(fitted, folder: Path) -> Path:
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    predictors = {}
    for name, predictor in fitted._predictors.items():
        if not hasattr(predictor, "state"):
            raise ValueError(f"the predictor {name} cannot be saved")
        predictors[name] = _put(arrays, name, predictor.state())
    reach = _put(arrays, REACH, fitted.reach.state()) if fitted.reach is not None else None
    save_file(arrays, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({
        "format": "topt-task", "version": 1, "weights": fitted.weights,
        "clip_negative": fitted.clip_negative, "protocol": fitted.protocol,
        "extrapolation_guard": ({"anchor": fitted.anchor, "label_max": fitted.label_max,
                                 "label_min": fitted.label_min}
                                if fitted.anchor is not None else None),
        "reach": reach, "predictors": predictors, "describe": fitted.describe()}, indent=2),
        encoding="utf-8")
    return folder


def _put(arrays: dict[str, np.ndarray], prefix: str, state: tuple[dict, dict]) -> dict:
    """Adds a `state()`'s arrays to `arrays` under `prefix/`; returns its JSON part."""
    state_arrays, meta = state
    for key, value in state_arrays.items():
        arrays[f"{prefix}/{key}"] = np.ascontiguousarray(value)
    return meta


def _under(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays saved under `prefix/`, by their own names."""
    return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(f"{prefix}/")}


def load_task_model(folder: Path) -> dict:
    """{"weights", "clip_negative", "extrapolation_guard", "reach": (arrays, meta) or None,
    "predictors": {name: (arrays, meta)}} from a saved task (a model saved before the guard or
    the reach existed has none of them)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        arrays = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise InputError(f"the task model in {folder} cannot be read ({exc})", layer=str(folder),
                         hint="The model folder is damaged: train the model again.") from exc
    if meta.get("format") != "topt-task":
        raise InputError(f"{folder / CONFIG} is not a ToPT task model", layer=str(folder),
                         hint="Pass the model/ folder written by `train`.")
    predictors = {}
    for name, predictor_meta in meta["predictors"].items():
        predictors[name] = (_under(arrays, name), predictor_meta)
    reach = (_under(arrays, REACH), meta["reach"]) if meta.get("reach") else None
    return {"weights": meta["weights"], "clip_negative": meta["clip_negative"],
            "extrapolation_guard": meta.get("extrapolation_guard"), "reach": reach,
            "predictors": predictors}
