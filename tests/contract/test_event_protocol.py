"""The border between the two worlds: every event engine/events.py can write is understood by
topt_qgis/engine_protocol.py, and a line that is not an event is dropped, never raised.

The plugin module is loaded by file path (see plugin_modules.py), so QGIS is not needed.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plugin_modules import ROOT, load_plugin_module

from engine import events as engine_events
from engine.errors import InputError
from engine.events import EventSink


@pytest.fixture(scope="module")
def protocol():
    return load_plugin_module("engine_protocol")


def _lines(emit) -> list[str]:
    """The JSON lines an EventSink writes while `emit(sink)` runs."""
    stream = io.StringIO()
    emit(EventSink("jsonl", stream))
    lines = stream.getvalue().splitlines()
    assert lines, "the sink wrote nothing: the check would prove nothing"
    return lines


def _every_event(sink: EventSink) -> None:
    """One of each event the engine makes, with the awkward values real runs carry."""
    sink.start("train", "0.1.0", "cpu")
    sink.start("check", "0.1.0", "cuda:0")
    sink.progress("data", 0.0, "reading layers")
    sink.progress("srel", np.float32(0.5), "epoch 100/200")
    sink.progress("srel", 1.7)  # clamped to 1 by the sink
    sink.progress("write", -0.2, "")  # clamped to 0
    for level in ("debug", "info", "warning"):
        sink.log(f"a {level} line with ünïcode, quotes \" and a\nnewline", level=level)
    sink.warning("12 regions had no points")
    sink.result(outputs={"regions": Path("/tmp/out/regions.gpkg"), "model": "/tmp/out/model"},
                metrics={"crime": {"r2": np.float64(0.71), "mae": 12.5, "n": np.int64(180),
                                   "per_fold": [np.float32(0.5), 0.75]},
                         "undefined": float("nan"), "big": float("inf")},
                summary="180 regions")
    sink.result(outputs={})
    for kind in engine_events.ERROR_KINDS:
        sink.error(kind, f"an error of kind {kind}")
    sink.error("not-a-kind", "an unknown kind becomes internal")
    err = InputError("has no numeric values", layer="Régions 2020", field="pop",
                     hint="Choose a numeric field.")
    sink.error("input", err.describe(), layer=err.layer, field=err.field, hint=err.hint)


def test_both_sides_speak_the_same_version_and_kinds(protocol):
    assert protocol.PROTOCOL_VERSION == engine_events.PROTOCOL_VERSION
    assert tuple(protocol.EVENT_KINDS) == tuple(engine_events.EVENT_KINDS)
    assert tuple(protocol.ERROR_KINDS) == tuple(engine_events.ERROR_KINDS)


def test_every_event_the_engine_writes_is_parsed(protocol):
    lines = _lines(_every_event)
    parsed = [protocol.parse_line(line) for line in lines]
    unparsed = [line for line, event in zip(lines, parsed, strict=True) if event is None]
    assert unparsed == []
    assert {e.kind for e in parsed} == set(engine_events.EVENT_KINDS)
    errors = [e for e in parsed if e.kind == "error"]
    assert {e.get("kind") for e in errors} == set(engine_events.ERROR_KINDS)
    for line, event in zip(lines, parsed, strict=True):
        assert event.version == protocol.PROTOCOL_VERSION
        assert event.time >= 0
        written = json.loads(line)
        assert event.data == {k: v for k, v in written.items() if k not in ("event", "v", "time")}


def test_fields_survive_the_border(protocol):
    parsed = [protocol.parse_line(line) for line in _lines(_every_event)]
    progress = [e for e in parsed if e.kind == "progress"]
    assert [e.get("fraction") for e in progress] == [0.0, 0.5, 1.0, 0.0]
    result = next(e for e in parsed if e.kind == "result")
    assert result.get("outputs")["regions"] == "/tmp/out/regions.gpkg"
    assert result.get("metrics")["crime"]["n"] == 180
    assert result.get("metrics")["crime"]["per_fold"] == [0.5, 0.75]
    assert math.isnan(result.get("metrics")["undefined"])
    log = next(e for e in parsed if e.kind == "log")
    assert log.get("message") == 'a debug line with ünïcode, quotes " and a\nnewline'
    input_error = parsed[-1]
    assert (input_error.get("layer"), input_error.get("field")) == ("Régions 2020", "pop")
    assert input_error.get("hint") == "Choose a numeric field."
    unknown = parsed[-2]
    assert unknown.get("kind") == "internal"
    text = protocol.describe_error(input_error)
    assert "Régions 2020" in text and "pop" in text and "Choose a numeric field." in text


def _valid_line(**changes) -> str:
    record = {"event": "progress", "v": engine_events.PROTOCOL_VERSION, "time": 0.1,
              "stage": "srel", "fraction": 0.5, "message": ""}
    record.update(changes)
    return json.dumps(record)


def test_numpy_arrays_in_metrics_are_written_as_lists(protocol):
    lines = _lines(lambda sink: sink.result(outputs={}, metrics={"r2": np.array([0.7, 0.72])}))
    assert protocol.parse_line(lines[0]).get("metrics") == {"r2": [0.7, 0.72]}


MALFORMED = {
    "empty": "",
    "blank": "   \n",
    "not JSON": "Loading weights...",
    "a warning printed by a library": "UserWarning: something deprecated",
    "a traceback line": "Traceback (most recent call last):",
    "partial line": _valid_line()[:25],
    "JSON list": "[1, 2, 3]",
    "JSON string": '"progress"',
    "JSON number": "42",
    "unknown event": _valid_line(event="telemetry"),
    "no event": json.dumps({"v": 1, "time": 0.0}),
    "no version": json.dumps({"event": "log", "level": "info", "message": "x"}),
    "version as text": _valid_line(v="1"),
    "progress without fraction": json.dumps({"event": "progress", "v": 1, "time": 0.0,
                                             "stage": "srel", "message": ""}),
    "fraction as text": _valid_line(fraction="half"),
    "fraction out of range": _valid_line(fraction=3.0),
    "error of an unknown kind": json.dumps({"event": "error", "v": 1, "time": 0.0,
                                            "kind": "oops", "message": "m", "layer": None,
                                            "field": None, "hint": None}),
    "log of an unknown level": json.dumps({"event": "log", "v": 1, "time": 0.0,
                                           "level": "shout", "message": "m"}),
    "invalid UTF-8 bytes": b'{"event": "log", "v": 1, "message": "\xff\xfe"}',
    "NUL bytes": "\0\0\0",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_line_gives_none_not_an_exception(protocol, name):
    assert protocol.parse_line(MALFORMED[name]) is None


@pytest.mark.parametrize("version", [0, engine_events.PROTOCOL_VERSION + 1])
def test_another_protocol_version_is_never_taken_for_this_one(protocol, version):
    """The plugin may show a newer engine's event or drop it, but must see it is foreign."""
    event = protocol.parse_line(_valid_line(v=version))
    assert event is None or event.version != protocol.PROTOCOL_VERSION


def test_every_prefix_of_a_line_is_harmless(protocol):
    """A line cut anywhere (a killed engine) never raises, and only the whole line is an event."""
    line = _lines(_every_event)[-1]
    for cut in range(len(line)):
        assert protocol.parse_line(line[:cut]) is None
    assert protocol.parse_line(line) is not None


def test_a_real_engine_run_speaks_only_events_on_stdout(protocol):
    """`python -m engine check --events jsonl`: every stdout line is an event of this version."""
    done = subprocess.run([sys.executable, "-m", "engine", "check", "--events", "jsonl",
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                            "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    parsed = [protocol.parse_line(line) for line in lines]
    assert None not in parsed, lines
    assert parsed[0].kind == "start" and parsed[-1].kind in ("result", "error")
    if done.returncode == 0:
        assert parsed[-1].kind == "result"
        assert parsed[-1].get("metrics")["engine_version"]


def test_the_plugin_shows_the_stage_time_the_engine_estimates(protocol):
    """A progress event with the engine's estimate of the stage's remaining time is valid and
    the plugin's progress text says it in the words the engine's own text mode uses."""
    ticks = iter([0.0, 120.0, 120.0, 140.0])  # the clock read by each progress call below
    stream = io.StringIO()
    sink = EventSink("jsonl", stream, clock=engine_events.StageClock(clock=lambda: next(ticks)))
    sink.progress("prompts", 0.0, "loading smollm2")
    sink.progress("prompts", 0.04, "crime: encoded 400 of 10000 regions")
    sink.progress("srel", 0.0, "")
    sink.progress("srel", 0.5, "")
    events = [protocol.parse_line(line) for line in stream.getvalue().splitlines()]
    assert len(events) == 4 and None not in events
    assert protocol.describe_progress(events[0]) == "prompts: loading smollm2"
    assert protocol.describe_progress(events[1]) == (
        "prompts: crime: encoded 400 of 10000 regions (about 48 min left)")
    assert protocol.describe_progress(events[3]) == "srel: about 20 s left"
    assert protocol.describe_progress(events[2]) == ""
    # whatever a line carries, the plugin's text never raises
    for odd in (float("inf"), float("nan"), -5.0, "soon", True, None, 1e300):
        line = json.dumps({"event": "progress", "v": 1, "time": 0.0, "stage": "fit",
                           "fraction": 0.5, "message": "fold 5/10", "seconds_left": odd})
        assert protocol.describe_progress(protocol.parse_line(line)).startswith("fit: fold 5/10")


@pytest.mark.parametrize("seconds", [0, 9, 44.9, 59.4, 59.6, 61, 3599, 3600, 4799, 86400])
def test_both_sides_round_durations_alike(protocol, seconds):
    assert protocol.duration(seconds) == engine_events.duration(seconds)
    assert protocol.time_left(seconds) == engine_events.time_left(seconds)
