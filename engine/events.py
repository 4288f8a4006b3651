"""The engine's side of the JSON-lines event protocol (version 1).

The engine writes one JSON object per line on stdout when run with `--events jsonl`. Its twin on
the plugin side is `topt_qgis/engine_protocol.py`; both carry the same PROTOCOL_VERSION and the
contract tests check that every event made here is understood there.

Events (every one has "event", "v", and "time" in seconds since the run started):
- {"event": "start", "command": str, "engine_version": str, "device": str}
- {"event": "progress", "stage": str, "fraction": float in [0, 1], "message": str,
   "seconds_left": float (optional: the stage's remaining time, extrapolated from its progress)}
- {"event": "log", "level": "debug"|"info"|"warning", "message": str}
- {"event": "result", "outputs": {name: path}, "metrics": {...}, "summary": str}
- {"event": "error", "kind": "input"|"memory"|"cancelled"|"internal", "message": str,
   "layer": str|None, "field": str|None, "hint": str|None}
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

PROTOCOL_VERSION = 1
EVENT_KINDS = ("start", "progress", "log", "result", "error")
ERROR_KINDS = ("input", "memory", "cancelled", "internal")


class StageClock:
    """How long a stage has left, extrapolated from its own progress.

    The rate is the fraction done since the stage last stood still (its first report, or the
    latest one that did not move it: loading a model, counting cached vectors) over the time
    since then; the remaining fraction at that rate is the estimate. None until the stage has
    run `min_seconds` and moved `min_fraction` since then (an earlier rate is mostly start-up
    noise), and once it is done. SREL and the language model report side by side on the CPU,
    each from its own thread: each stage keeps its own clock.
    """

    def __init__(self, min_seconds: float = 10.0, min_fraction: float = 0.02,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_seconds, self.min_fraction = min_seconds, min_fraction
        self._clock = clock
        self._since: dict[str, tuple[float, float]] = {}  # stage -> (time, fraction) it stood at
        self._lock = threading.Lock()

    def seconds_left(self, stage: str, fraction: float) -> float | None:
        now = self._clock()
        with self._lock:
            if fraction >= 1.0:
                self._since.pop(stage, None)
                return None
            since = self._since.get(stage)
            if since is None or fraction <= since[1]:
                self._since[stage] = (now, fraction)
                return None
            elapsed, done = now - since[0], fraction - since[1]
        if elapsed < self.min_seconds or done < self.min_fraction:
            return None
        return elapsed * (1.0 - fraction) / done


def time_left(seconds: float) -> str:
    """'a few seconds left', 'about 40 s left', 'about 12 min left', 'about 1 h 20 min left'."""
    return "a few seconds left" if seconds < 9.5 else f"about {duration(seconds)} left"


def duration(seconds: float) -> str:
    """A rounded duration: '10 s' (at least), '40 s', '12 min', '1 h 20 min'."""
    seconds = max(float(seconds), 0.0)
    if seconds < 59.5:
        return f"{max(int(round(seconds / 10.0)) * 10, 10)} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class EventSink:
    """Sends events: as JSON lines (for the plugin) or as plain text with a progress bar."""

    def __init__(self, mode: str = "text", stream: IO[str] | None = None,
                 clock: StageClock | None = None) -> None:
        if mode not in ("text", "jsonl", "quiet"):
            raise ValueError(f"unknown events mode {mode!r}")
        self.mode = mode
        self.stream = stream or sys.stdout
        self.clock = clock or StageClock()
        self._start = time.monotonic()
        self._bar_stage: str | None = None
        self._lock = threading.Lock()  # SREL and the language model may report side by side

    def emit(self, event: str, **fields: Any) -> None:
        if event not in EVENT_KINDS:
            raise ValueError(f"unknown event {event!r}")
        if self.mode == "quiet":
            return
        with self._lock:  # one whole line at a time
            self._emit(event, fields)

    def _emit(self, event: str, fields: dict) -> None:
        if self.mode == "jsonl":
            record = {"event": event, "v": PROTOCOL_VERSION,
                      "time": round(time.monotonic() - self._start, 3), **fields}
            self.stream.write(json.dumps(record, default=_jsonable) + "\n")
            self.stream.flush()
            return
        self._text(event, fields)

    def start(self, command: str, engine_version: str, device: str) -> None:
        self.emit("start", command=command, engine_version=engine_version, device=device)

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        fraction = float(min(max(fraction, 0.0), 1.0))
        left = self.clock.seconds_left(stage, fraction)
        extra = {} if left is None else {"seconds_left": round(left, 1)}
        self.emit("progress", stage=stage, fraction=fraction, message=message, **extra)

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)

    def warning(self, message: str) -> None:
        self.log(message, level="warning")

    def result(self, outputs: dict, metrics: dict | None = None, summary: str = "") -> None:
        self.emit("result", outputs=outputs, metrics=metrics or {}, summary=summary)

    def error(self, kind: str, message: str, layer: str | None = None,
              field: str | None = None, hint: str | None = None) -> None:
        if kind not in ERROR_KINDS:
            kind = "internal"
        self.emit("error", kind=kind, message=message, layer=layer, field=field, hint=hint)

    def _text(self, event: str, fields: dict) -> None:
        out = sys.stderr if self.stream is sys.stdout else self.stream
        if event == "progress":
            width = 20
            done = int(round(fields["fraction"] * width))
            bar = "#" * done + "-" * (width - done)
            left = fields.get("seconds_left")
            left = time_left(left) if left is not None else ""
            line = (f"\r{fields['stage']:<8} [{bar}] {fields['fraction'] * 100:5.1f}% "
                    f"{left:<21} {fields['message'][:40]:<40}")
            out.write(line)
            if fields["fraction"] >= 1.0:
                out.write("\n")
            self._bar_stage = fields["stage"]
            out.flush()
            return
        if event == "log":
            prefix = "warning: " if fields["level"] == "warning" else ""
            if fields["level"] != "debug":
                out.write(f"{prefix}{fields['message']}\n")
        elif event == "error":
            out.write(f"error: {fields['message']}\n")
        elif event == "result" and fields.get("summary"):
            self.stream.write(fields["summary"] + "\n")
        out.flush()


def _jsonable(value: Any) -> Any:
    """Numbers from numpy and paths become plain JSON values."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars (a scalar's tolist is its value)
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
