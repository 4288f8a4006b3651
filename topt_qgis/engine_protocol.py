"""The plugin's side of the engine's JSON-lines event protocol (version 1).

The twin of `engine/events.py`: the engine writes one JSON object per line on stdout when run
with `--events jsonl`; `parse_line` turns one line into an `Event`. A line that is not a valid
event (a stray print, a half-written line, an unknown event) gives None and is logged by the
caller: it never stops a run. Standard library only, so the contract tests can load this file
without QGIS.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
EVENT_KINDS = ("start", "progress", "log", "result", "error")
ERROR_KINDS = ("input", "memory", "cancelled", "internal")
LOG_LEVELS = ("debug", "info", "warning")

# The fields every event of a kind must carry, with the JSON types they may have.
_STR, _NUM, _DICT, _OPT_STR = (str,), (int, float), (dict,), (str, type(None))
REQUIRED_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "start": {"command": _STR, "engine_version": _STR, "device": _STR},
    "progress": {"stage": _STR, "fraction": _NUM, "message": _STR},
    "log": {"level": _STR, "message": _STR},
    "result": {"outputs": _DICT, "metrics": _DICT, "summary": _STR},
    "error": {"kind": _STR, "message": _STR, "layer": _OPT_STR, "field": _OPT_STR,
              "hint": _OPT_STR},
}


@dataclass(frozen=True)
class Event:
    """One event from the engine.

    Args:
        kind: "start", "progress", "log", "result" or "error".
        version: the protocol version the engine wrote (PROTOCOL_VERSION when compatible).
        time: seconds since the engine's run started.
        data: the event's own fields (see engine/events.py), without "event", "v" and "time".
    """

    kind: str
    version: int
    time: float
    data: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)


def parse_line(line: str | bytes) -> Event | None:
    """The event on one line of the engine's stdout, or None when the line is not an event."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    kind = record.get("event")
    version = record.get("v")
    if kind not in EVENT_KINDS or not isinstance(version, int) or isinstance(version, bool):
        return None
    moment = record.get("time", 0.0)
    if not isinstance(moment, (int, float)) or isinstance(moment, bool):
        return None
    data = {k: v for k, v in record.items() if k not in ("event", "v", "time")}
    if version == PROTOCOL_VERSION and not _valid(kind, data):
        return None
    return Event(kind=kind, version=version, time=float(moment), data=data)


def _valid(kind: str, data: dict[str, Any]) -> bool:
    for name, types in REQUIRED_FIELDS[kind].items():
        value = data.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            return False
    if kind == "progress" and not 0.0 <= float(data["fraction"]) <= 1.0:
        return False
    if kind == "log" and data["level"] not in LOG_LEVELS:
        return False
    return not (kind == "error" and data["kind"] not in ERROR_KINDS)


def describe_error(event: Event) -> str:
    """An error event as one message: where (layer, field), what, and what to do.

    The engine's message already names the layer and field (InputError.describe); they are added
    here only when the message does not mention them.
    """
    message = str(event.get("message") or "the engine reported an error")
    where = []
    layer, field_name = event.get("layer"), event.get("field")
    if layer and str(layer) not in message:
        where.append(f"layer '{layer}'")
    if field_name and str(field_name) not in message:
        where.append(f"field '{field_name}'")
    text = (", ".join(where) + ": " if where else "") + message
    hint = event.get("hint")
    if hint and str(hint) not in text:
        text += f" {hint}"
    return text


def describe_progress(event: Event) -> str:
    """A progress event as one line: its stage, its message, and the stage's remaining time
    when the engine could estimate it ('prompts: crime: encoded 320 of 10000 regions (about
    48 min left)')."""
    text = str(event.get("message") or "")
    left = event.get("seconds_left")
    if (isinstance(left, (int, float)) and not isinstance(left, bool) and math.isfinite(left)
            and left >= 0):
        text = f"{text} ({time_left(left)})" if text else time_left(left)
    return f"{event.get('stage')}: {text}" if text else ""


def time_left(seconds: float) -> str:
    """'a few seconds left', 'about 40 s left', 'about 12 min left', 'about 1 h 20 min left'
    (the words of the engine's own text mode)."""
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
