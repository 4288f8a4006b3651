"""Runs the engine (`python -m engine ...`) as a separate process and follows its events.

The engine lives in its own Python environment (torch, numpy 2, ...), never in QGIS's. This
module finds that Python and the engine's source, starts the engine with an argument list (never
a shell) and a clean environment, turns its JSON-lines events into Processing feedback and the
"ToPT" tab of the message log, stops it on cancel, and returns its result or raises
QgsProcessingException with the engine's own message.
"""

from __future__ import annotations

import os
import queue
import subprocess  # nosec B404: the engine is run with an argument list, never a shell
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMessageLog,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsSettings,
)

from .engine_installer import signal_process_group
from .engine_protocol import (
    PROTOCOL_VERSION,
    Event,
    describe_error,
    describe_progress,
    parse_line,
)

LOG_TAG = "ToPT"  # the message log tab
SETTING_PYTHON = "topt/engine_python"  # QgsSettings key: the engine's Python executable
SETTING_SOURCE = "topt/engine_source"  # QgsSettings key: the folder holding engine/
ENV_PYTHON = "TOPT_ENGINE_PYTHON"
ENV_SOURCE = "TOPT_ENGINE_SOURCE"
PLUGIN_DIR = Path(__file__).resolve().parent
GRACE_SECONDS = 10.0  # after SIGTERM on cancel, how long the engine may take to stop
POLL_SECONDS = 0.1  # how often a silent engine is checked for cancellation
STDERR_TAIL = 60  # lines of the engine's stderr kept for an error message
# Variables QGIS sets for its own Python, PROJ and GDAL, and Qt's: the engine brings its own.
DROPPED_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "VIRTUAL_ENV",
               "__PYVENV_LAUNCHER__", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH",
               "GDAL_PLUGINS", "GEOTIFF_CSV", "LD_PRELOAD", "CONDA_PREFIX")
SETUP_HELP = (
    "Run 'Install engine' in the ToPT group of the Processing toolbox once (it builds the "
    "engine's own Python environment in your QGIS profile folder), or set the engine's Python "
    "under the QGIS setting 'topt/engine_python' (or the environment variable TOPT_ENGINE_PYTHON)."
)


class EngineNotFound(QgsProcessingException):
    """No engine Python or no engine source: the message says how to set it up."""


@dataclass
class EngineResult:
    """What a finished engine run sent in its `result` event.

    Args:
        outputs: output name -> path.
        metrics: numbers and facts about the run (per command; see docs/engine-cli.md).
        summary: a few lines for the user.
        log: every log message the engine sent, in order.
    """

    outputs: dict[str, Any]
    metrics: dict[str, Any]
    summary: str = ""
    log: list[str] = field(default_factory=list)


@dataclass
class EngineLocation:
    """Where the engine is: its Python, the folder that holds `engine/`, and how they were found."""

    python: Path
    source: Path
    found_by: str


def engine_data_dir() -> Path:
    """The user's ToPT data folder inside the QGIS profile (engine venv, caches)."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "topt"


def engine_venv_dir() -> Path:
    """Where 'Install engine' builds the engine's environment."""
    return engine_data_dir() / "engine-venv"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_engine_source() -> Path | None:
    """The folder holding the engine package (`engine/__main__.py`).

    Order: the setting topt/engine_source, env TOPT_ENGINE_SOURCE, the plugin folder (the
    packaged plugin carries topt_qgis/engine/), the plugin folder's parent (a checkout).
    """
    candidates = [QgsSettings().value(SETTING_SOURCE, "", type=str), os.environ.get(ENV_SOURCE)]
    candidates += [str(PLUGIN_DIR), str(PLUGIN_DIR.parent)]
    for candidate in candidates:
        if candidate and (Path(candidate) / "engine" / "__main__.py").is_file():
            return Path(candidate).resolve()
    return None


def find_engine_python(source: Path | None = None) -> tuple[Path, str] | None:
    """The engine's Python executable and how it was found, or None.

    Order: the setting topt/engine_python, env TOPT_ENGINE_PYTHON, the project's own .venv beside
    the engine source (a checkout), the environment made by 'Install engine'.
    """
    setting = QgsSettings().value(SETTING_PYTHON, "", type=str)
    if setting:
        return (Path(setting), "the QGIS setting topt/engine_python") if _runnable(setting) else None
    env = os.environ.get(ENV_PYTHON)
    if env:
        return (Path(env), "the environment variable TOPT_ENGINE_PYTHON") if _runnable(env) else None
    if source is not None:
        project = _venv_python(source / ".venv")
        if _runnable(project):
            return project, f"the project environment {source / '.venv'}"
    installed = _venv_python(engine_venv_dir())
    if _runnable(installed):
        return installed, f"the engine installed in {engine_venv_dir()}"
    return None


def _runnable(path: str | Path) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def locate_engine() -> EngineLocation:
    """Where the engine is, or EngineNotFound with what to do."""
    source = find_engine_source()
    if source is None:
        raise EngineNotFound(
            "The ToPT engine's source (the 'engine' folder) was not found beside the plugin "
            f"({PLUGIN_DIR}). Reinstall the plugin, or set 'topt/engine_source' to the folder "
            "that holds 'engine'.")
    found = find_engine_python(source)
    if found is None:
        configured = QgsSettings().value(SETTING_PYTHON, "", type=str) or os.environ.get(ENV_PYTHON)
        if configured:
            raise EngineNotFound(f"The engine's Python '{configured}' does not exist or cannot "
                                 f"be run. {SETUP_HELP}")
        raise EngineNotFound(f"The ToPT engine is not installed yet. {SETUP_HELP}")
    return EngineLocation(python=found[0], source=source, found_by=found[1])


def engine_status() -> tuple[bool, str]:
    """(True, "") when the engine can be started, else (False, what to do): for canExecute()."""
    try:
        locate_engine()
    except EngineNotFound as exc:
        return False, str(exc)
    return True, ""


def clean_environment(source: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: QGIS's own Python, PROJ, GDAL and Qt variables removed.

    PYTHONPATH holds only the engine's source folder; HF_HUB_OFFLINE and the rest pass through.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in DROPPED_ENV and not k.startswith("QT_")}
    env["PYTHONPATH"] = str(source)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def log(message: str, level: Qgis.MessageLevel = Qgis.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


def run_engine(command: str, arguments: list[str], feedback: QgsProcessingFeedback | None,
               *, location: EngineLocation | None = None,
               grace_seconds: float = GRACE_SECONDS) -> EngineResult:
    """Runs `python -m engine COMMAND ARGUMENTS --events jsonl` and follows it to the end.

    Args:
        command: an engine command (prepare, embed, train, predict, evaluate, check).
        arguments: its options as a list of strings (no shell quoting: never through a shell).
        feedback: receives progress, messages and errors; its cancellation stops the engine.
        location: the engine to run (default: locate_engine()).
        grace_seconds: after a cancel, how long the engine may take to stop before it is killed.

    Returns:
        The outputs, metrics and summary of the engine's result event.

    Raises:
        QgsProcessingException: with the engine's message (layer, field, hint) when it failed,
            was cancelled, or ended without a result; EngineNotFound when there is no engine.
    """
    feedback = feedback or QgsProcessingFeedback()
    location = location or locate_engine()
    argv = [str(location.python), "-m", "engine", command, *arguments, "--events", "jsonl"]
    log(f"running {' '.join(argv)} (engine found by {location.found_by})")
    feedback.pushDebugInfo(f"Engine: {' '.join(argv)}")
    try:
        process = subprocess.Popen(  # nosec B603: an argument list built here, no shell
            argv, cwd=str(location.source), env=clean_environment(location.source),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=os.name != "nt",
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
    except OSError as exc:
        raise QgsProcessingException(
            f"The engine could not be started with {location.python}: {exc.strerror}. "
            f"{SETUP_HELP}") from exc
    lines: queue.Queue[bytes | None] = queue.Queue()
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
    readers = [threading.Thread(target=_pump_stdout, args=(process.stdout, lines), daemon=True),
               threading.Thread(target=_drain_stderr, args=(process.stderr, stderr_tail),
                                daemon=True)]
    for reader in readers:
        reader.start()
    follower = _EventFollower(feedback)
    cancelled = False
    while True:
        if feedback.isCanceled() and not cancelled:
            cancelled = True
            feedback.pushInfo("Stopping the engine...")
            stop_process(process, grace_seconds)
        try:
            line = lines.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if line is None:
            break
        follower.take(line)
    returncode = process.wait()
    for reader in readers:
        reader.join(timeout=5)
    log(f"engine {command} ended with exit code {returncode}")
    if cancelled or (follower.error is not None and follower.error.get("kind") == "cancelled"):
        raise QgsProcessingException("The ToPT run was cancelled; nothing was written.")
    if follower.error is not None:
        raise QgsProcessingException(describe_error(follower.error))
    if returncode != 0 or follower.result is None:
        tail = "\n".join(stderr_tail)
        if tail:
            log(f"engine stderr (last lines):\n{tail}", Qgis.Critical)
        last = next((s for s in reversed(stderr_tail) if s.strip()), "")
        raise QgsProcessingException(
            f"The engine stopped unexpectedly (exit code {returncode}) without a result"
            + (f": {last}" if last else ".")
            + " The 'ToPT' tab of the log messages panel has the details.")
    return EngineResult(outputs=dict(follower.result.get("outputs") or {}),
                        metrics=dict(follower.result.get("metrics") or {}),
                        summary=str(follower.result.get("summary") or ""), log=follower.messages)


class _EventFollower:
    """Turns event lines into feedback; keeps the result or error event."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        self.feedback = feedback
        self.result: Event | None = None
        self.error: Event | None = None
        self.messages: list[str] = []
        self.malformed = 0
        self.stage_done: dict[str, float] = {}  # stage -> its latest fraction

    def take(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text.strip():
            return
        event = parse_line(text)
        if event is None:
            self.malformed += 1
            log(f"ignored a line from the engine that is not an event: {text[:300]}",
                Qgis.Warning)
            return
        if event.version != PROTOCOL_VERSION:
            self.malformed += 1
            log(f"ignored an event of protocol version {event.version} (this plugin speaks "
                f"{PROTOCOL_VERSION}); update the plugin and the engine together", Qgis.Warning)
            return
        getattr(self, f"_on_{event.kind}")(event)

    def _on_start(self, event: Event) -> None:
        message = (f"ToPT engine {event.get('engine_version')}: {event.get('command')} on "
                   f"{event.get('device')}")
        self.feedback.pushInfo(message)
        log(message)

    # Each engine stage reports its own 0..1; the bar shows the whole run (percent ranges).
    STAGE_RANGES = {"data": (0, 5), "srel": (5, 60), "prompts": (60, 80), "fit": (80, 97),
                    "write": (97, 100)}

    def overall_percent(self) -> float:
        """The whole run's percent: each stage's share times its fraction, where a stage not
        seen but followed by one already seen counts as done (skipped). SREL and the language
        model may report side by side (on the CPU), so this sums rather than follows the
        latest event, and the bar never moves back."""
        order = list(self.STAGE_RANGES)
        seen = [order.index(s) for s in self.stage_done if s in self.STAGE_RANGES]
        last = max(seen, default=-1)
        total = 0.0
        for k, (stage, (low, high)) in enumerate(self.STAGE_RANGES.items()):
            fraction = self.stage_done.get(stage, 1.0 if k < last else 0.0)
            total += (high - low) * fraction
        return total

    def _on_progress(self, event: Event) -> None:
        stage, fraction = event.get("stage"), float(event.get("fraction"))
        if stage in self.STAGE_RANGES:
            self.stage_done[stage] = max(fraction, self.stage_done.get(stage, 0.0))
            self.feedback.setProgress(self.overall_percent())
        else:
            self.feedback.setProgress(100.0 * fraction)
        text = describe_progress(event)
        if text:
            self.feedback.setProgressText(text)

    def _on_log(self, event: Event) -> None:
        message, level = str(event.get("message")), event.get("level")
        self.messages.append(message)
        if level == "debug":
            self.feedback.pushDebugInfo(message)
            return
        if level == "warning":
            self.feedback.pushWarning(message) if hasattr(self.feedback, "pushWarning") \
                else self.feedback.pushInfo(f"Warning: {message}")
            log(message, Qgis.Warning)
            return
        self.feedback.pushInfo(message)
        log(message)

    def _on_result(self, event: Event) -> None:
        self.result = event
        summary = event.get("summary")
        if summary:
            self.feedback.pushInfo(summary)
            log(summary, Qgis.Success)

    def _on_error(self, event: Event) -> None:
        self.error = event
        if event.get("kind") != "cancelled":
            message = describe_error(event)
            self.feedback.reportError(message, fatalError=True)
            log(message, Qgis.Critical)


def _pump_stdout(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, b""):
        lines.put(line)
    stream.close()
    lines.put(None)


def _drain_stderr(stream, tail: deque) -> None:
    """Reads stderr to the end so the pipe never fills and blocks the engine."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip()
        tail.append(line)
        if line:
            QgsMessageLog.logMessage(f"engine: {line}", LOG_TAG, Qgis.Info)
    stream.close()


def stop_process(process: subprocess.Popen, grace_seconds: float = GRACE_SECONDS) -> None:
    """Asks the engine (and anything it started) to stop, then kills it after a grace period."""
    if process.poll() is not None:
        return
    try:
        signal_process_group(process)
    except OSError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return
        time.sleep(0.05)
    log(f"the engine did not stop within {grace_seconds:.0f} s; killing it", Qgis.Warning)
    try:
        signal_process_group(process, kill=True)
    except OSError:
        pass
