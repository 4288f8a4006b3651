"""The engine's side of the JSON-lines event protocol (version 1).

The engine writes one JSON object per line on stdout when run with `--events jsonl`. Its twin on
the plugin side is `topt_qgis/engine_protocol.py`; both carry the same PROTOCOL_VERSION and the
contract tests check that every event made here is understood there.

Events (every one has "event", "v", and "time" in seconds since the run started):
- {"event": "start", "command": str, "engine_version": str, "device": str}
- {"event": "progress", "stage": str, "fraction": float in [0, 1], "message": str}
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
from typing import IO, Any

PROTOCOL_VERSION = 1
EVENT_KINDS = ("start", "progress", "log", "result", "error")
ERROR_KINDS = ("input", "memory", "cancelled", "internal")


class EventSink:
    """Sends events: as JSON lines (for the plugin) or as plain text with a progress bar."""

    def __init__(self, mode: str = "text", stream: IO[str] | None = None) -> None:
        if mode not in ("text", "jsonl", "quiet"):
            raise ValueError(f"unknown events mode {mode!r}")
        self.mode = mode
        self.stream = stream or sys.stdout
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
        self.emit("progress", stage=stage, fraction=float(min(max(fraction, 0.0), 1.0)),
                  message=message)

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
            width = 30
            done = int(round(fields["fraction"] * width))
            bar = "#" * done + "-" * (width - done)
            line = f"\r{fields['stage']:<14} [{bar}] {fields['fraction'] * 100:5.1f}% {fields['message'][:40]:<40}"
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
