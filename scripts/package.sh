#!/usr/bin/env bash
# topt_qgis.zip for the QGIS plugin store, from tracked files only, byte-for-byte reproducible.
#
# Layout (one top folder, as the store and QGIS's plugin installer want it):
#   topt_qgis/metadata.txt            the repository's metadata.txt
#   topt_qgis/LICENSE, README.md      GPL-2.0-or-later; a short README written here
#   topt_qgis/*.py, ...               the plugin (tracked files of topt_qgis/, no tests)
#   topt_qgis/engine/                 the engine's source and engine/requirements*.txt; the plugin
#                                     runs `python -m engine` with topt_qgis/ as working directory
#   topt_qgis/resources/              icons from resources/ (not resources/demo/: `make demo` data)
# Never: tests, __pycache__, *.pyc, model weights, compiled binaries, files over 2 MB.
# Fails when metadata.txt lacks a field the store requires or the zip is 25 MB or more.
# Usage: scripts/package.sh [OUTPUT.zip]   (default: topt_qgis.zip in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-topt_qgis.zip}

for needed in metadata.txt LICENSE topt_qgis/__init__.py engine/__main__.py engine/requirements.txt; do
  [ -f "$needed" ] || { echo "package: $needed is missing" >&2; exit 1; }
done
git ls-files --error-unmatch topt_qgis/__init__.py >/dev/null 2>&1 \
  || { echo "package: topt_qgis/__init__.py is not tracked by git; commit the plugin first" >&2; exit 1; }
if [ -n "$(git status --porcelain -- topt_qgis engine resources metadata.txt LICENSE)" ]; then
  echo "package: note: uncommitted changes in packaged folders; the zip holds the working copy of tracked files" >&2
fi

python3 - "$out" <<'PY'
"""Writes the zip: sorted entries, fixed dates and permissions, so the same tree gives the same bytes."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

OUT = Path(sys.argv[1])
TOP = "topt_qgis"
MAX_ZIP_BYTES = 25 * 1024 * 1024  # the plugin store's limit
MAX_FILE_BYTES = 2 * 1024 * 1024  # bigger files (demo layers, weights) stay out of the zip
DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: no build time leaks in
SKIP_SUFFIXES = {  # weights, compiled code and caches: never in a plugin zip
    ".pyc", ".pyo", ".so", ".dll", ".dylib", ".exe", ".bin", ".pt", ".pth", ".ckpt",
    ".safetensors", ".gguf", ".onnx", ".npy", ".npz", ".pkl", ".pickle", ".h5", ".zip",
}
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version",
                     "author", "email", "repository")
README = """\
ToPT for QGIS
=============

Task-oriented urban region embeddings (SREL + Prompt4RE) and indicator prediction from the
layers of a QGIS project. The algorithms appear in the Processing toolbox under "ToPT".

The heavy computation runs in a separate Python environment (the "engine", in engine/), so QGIS's
own Python is never touched. Run the toolbox's "Install engine" algorithm once: it creates that
environment in your QGIS profile's data folder and installs the pinned packages listed in
engine/requirements.txt (a few GB; needs access to the Python package index).

Licence: GNU General Public License, version 2 or (at your option) any later version. See LICENSE.
"""


def wanted(path: str) -> str | None:
    """The path inside the zip for a tracked file, or None when it stays out."""
    parts = path.split("/")
    if "__pycache__" in parts or any(p in ("tests", "test") for p in parts):
        return None
    if Path(path).suffix.lower() in SKIP_SUFFIXES or Path(path).name.startswith("test_"):
        return None
    if path in ("metadata.txt", "LICENSE"):
        return f"{TOP}/{path}"
    if parts[0] == "topt_qgis":
        return "/".join([TOP, *parts[1:]])
    if parts[0] == "resources" and parts[1] == "demo":
        return None  # the demo data and its build script serve `make demo` in a checkout
    if parts[0] in ("engine", "resources"):
        return f"{TOP}/{path}"
    return None


def check_metadata(text: str) -> None:
    fields = dict(re.findall(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$", text, flags=re.MULTILINE))
    missing = [f for f in REQUIRED_METADATA if not fields.get(f)]
    if missing:
        sys.exit(f"package: metadata.txt lacks {', '.join(missing)} (the plugin store needs them)")
    if "[general]" not in text:
        sys.exit("package: metadata.txt has no [general] section")


def main() -> None:
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--", "metadata.txt", "LICENSE", "topt_qgis", "engine",
         "resources"], check=True, capture_output=True).stdout.decode("utf-8")
    tracked = [p for p in listing.split("\0") if p]
    entries: dict[str, bytes] = {}
    skipped_big = []
    for path in tracked:
        name = wanted(path)
        if name is None or not Path(path).is_file():
            continue
        data = Path(path).read_bytes()
        if len(data) > MAX_FILE_BYTES:
            skipped_big.append(f"{path} ({len(data) / 1e6:.1f} MB)")
            continue
        entries[name] = data
    entries[f"{TOP}/README.md"] = README.encode()
    check_metadata(entries[f"{TOP}/metadata.txt"].decode("utf-8"))
    folders = {"/".join(n.split("/")[:i]) + "/" for n in entries for i in range(1, n.count("/") + 1)}
    tmp = OUT.with_name(OUT.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for folder in sorted(folders):
            info = zipfile.ZipInfo(folder, date_time=DATE)
            info.external_attr = (0o40755 << 16) | 0x10
            info.create_system = 3
            zf.writestr(info, b"")
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=DATE)
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[name], compresslevel=9)
    size = tmp.stat().st_size
    if size >= MAX_ZIP_BYTES:
        tmp.unlink()
        sys.exit(f"package: the zip would be {size / 1e6:.1f} MB, the plugin store takes < 25 MB")
    tmp.replace(OUT)
    for item in skipped_big:
        print(f"package: left out (over 2 MB): {item}", file=sys.stderr)
    print(f"{OUT}: {len(entries)} files, {size / 1024:.0f} KiB")


main()
PY
