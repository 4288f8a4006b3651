"""`make install-engine`: the engine's environment in a QGIS profile, as the plugin's
*Install engine* algorithm makes it (same installer, standard library only).

Usage: python3 scripts/install_engine.py [PROFILE_DIR]
(default: ~/.local/share/QGIS/QGIS3/profiles/default, where QGIS 3 keeps its default profile)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _installer():
    """The plugin's installer module, loaded by path (the plugin package itself needs QGIS)."""
    spec = importlib.util.spec_from_file_location(
        "engine_installer", ROOT / "topt_qgis" / "engine_installer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    profile = Path(argv[0]) if argv else \
        Path.home() / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    target = profile / "topt" / "engine-venv"
    installer = _installer()

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction * 100:5.1f}%] {message}", flush=True)

    try:
        python = installer.install_engine(target, ROOT / "engine", progress, lambda: False)
    except installer.EngineInstallError as exc:
        print(f"install-engine: {exc}", file=sys.stderr)
        return 1
    print(f"the engine's Python is {python}; the plugin finds it there")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
