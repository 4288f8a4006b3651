"""Save and load models as safetensors (weights) + JSON (config and constructor arguments).

No pickle anywhere: `model.safetensors` holds the state dict (parameters and buffers), and
`config.json` holds {"format", "version", "architecture", "config", "arguments"}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import InputError

FORMAT = "topt-model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _architectures() -> dict[str, tuple[type[nn.Module], type]]:
    from engine.models.modeling_prompt4re import Prompt4RE, Prompt4REConfig
    from engine.models.modeling_srel import SREL, SRELConfig

    return {"SREL": (SREL, SRELConfig), "Prompt4RE": (Prompt4RE, Prompt4REConfig)}


def save_model(model: nn.Module, config: Any, path_dir: str | Path) -> Path:
    """Write `model.safetensors` and `config.json` into `path_dir` (created if missing).

    Args:
        model: an SREL or Prompt4RE model (anything in `_architectures()`).
        config: its config dataclass (must have `to_dict()`).
        path_dir: the folder to write into.

    Returns:
        The folder.
    """
    name = type(model).__name__
    if name not in _architectures():
        raise ValueError(f"cannot save a {name}")
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS), metadata={"format": FORMAT, "architecture": name})
    meta = {"format": FORMAT, "version": VERSION, "architecture": name,
            "config": config.to_dict(), "arguments": model.constructor_arguments()}
    (path / CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def load_model(path_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved model (in eval mode) from `path_dir`. Its config is `model.config`."""
    path = Path(path_dir)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise InputError(f"no saved model in {path}", layer=str(path),
                         hint=f"Pass the folder that holds {CONFIG} and {WEIGHTS} (the model/ "
                              "folder written by `train` or `embed`).")
    try:
        meta = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"the model's {CONFIG} cannot be read ({exc})", layer=str(path),
                         hint="Train the model again, or choose the model/ folder it wrote.") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{path / CONFIG} is not a ToPT model of version {VERSION}",
                         layer=str(path), hint="Train the model again with this version.")
    architectures = _architectures()
    if meta.get("architecture") not in architectures:
        raise InputError(f"unknown architecture {meta.get('architecture')!r}", layer=str(path))
    model_class, config_class = architectures[meta["architecture"]]
    model = model_class(config_class(**meta["config"]), **meta["arguments"])
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS), device="cpu"), strict=True)
    except (SafetensorError, OSError, RuntimeError) as exc:  # damaged, truncated or mismatched
        raise InputError(f"the model's weights {path / WEIGHTS} are damaged or do not fit its "
                         f"config ({exc})", layer=str(path),
                         hint="Train the model again, or choose the model/ folder it wrote.") from exc
    return model.to(device).eval()
