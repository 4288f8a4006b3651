"""Loads plugin modules by file path, so topt_qgis/__init__.py (which imports qgis) never runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "topt_qgis"


def load_plugin_module(name: str):
    """topt_qgis/<name>.py as a standalone module; skips when the plugin has not written it yet."""
    path = PLUGIN / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist yet")
    spec = importlib.util.spec_from_file_location(f"_topt_plugin_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module
