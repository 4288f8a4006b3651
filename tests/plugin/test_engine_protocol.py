"""The plugin's protocol twin: valid events parse, anything else is None (never an exception)."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest
from conftest import ROOT

from topt_qgis.engine_protocol import PROTOCOL_VERSION, describe_error, parse_line


def engine_events_module():
    """engine/events.py loaded by path (standard library only): the engine's side."""
    spec = importlib.util.spec_from_file_location("_engine_events", ROOT / "engine" / "events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_event_the_engine_makes_is_understood():
    events = engine_events_module()
    assert events.PROTOCOL_VERSION == PROTOCOL_VERSION
    stream = io.StringIO()
    sink = events.EventSink("jsonl", stream)
    sink.start("train", "0.1.0", "cpu")
    sink.progress("srel", 0.5, "epoch 5")
    sink.log("hello")
    sink.warning("careful")
    sink.result({"regions": "/x/regions.gpkg"}, {"r2": 0.5}, "done")
    sink.error("input", "no such field", layer="regions", field="crime", hint="Pick another.")
    parsed = [parse_line(line) for line in stream.getvalue().splitlines()]
    assert [e.kind for e in parsed] == ["start", "progress", "log", "log", "result", "error"]
    assert parsed[1].get("fraction") == 0.5 and parsed[3].get("level") == "warning"
    assert parsed[4].get("outputs") == {"regions": "/x/regions.gpkg"}
    assert describe_error(parsed[5]) == "layer 'regions', field 'crime': no such field Pick another."


@pytest.mark.parametrize("line", [
    "", "plain text", "[1, 2]", '{"event": "progress"', '{"event": "nope", "v": 1}',
    '{"event": "progress", "v": 1, "stage": "x", "fraction": 1.5, "message": ""}',
    '{"event": "progress", "v": 1, "stage": "x", "fraction": "half", "message": ""}',
    '{"event": "log", "v": 1, "level": "loud", "message": "x"}',
    '{"event": "error", "v": 1, "kind": "oops", "message": "x", "layer": null, "field": null, '
    '"hint": null}',
    '{"event": "result", "v": 1, "outputs": [], "metrics": {}, "summary": ""}',
    '{"event": "start", "v": "1", "command": "x", "engine_version": "1", "device": "cpu"}',
    b"\xff\xfe not utf-8",
])
def test_malformed_lines_give_none(line):
    assert parse_line(line) is None


def test_newer_protocol_is_recognised_by_version():
    line = json.dumps({"event": "start", "v": PROTOCOL_VERSION + 1, "time": 0, "whatever": 1})
    event = parse_line(line)
    assert event is not None and event.version == PROTOCOL_VERSION + 1


def test_the_progress_bar_follows_the_whole_run(qgis_app):
    """Each engine stage counts from 0 to 1; the bar must only move forward across stages."""
    from qgis.core import QgsProcessingFeedback

    from topt_qgis.engine_runner import _EventFollower

    feedback = QgsProcessingFeedback()
    follower = _EventFollower(feedback)
    seen = []
    for stage in ("data", "srel", "prompts", "fit", "write"):
        for fraction in (0.0, 0.5, 1.0):
            line = json.dumps({"event": "progress", "v": PROTOCOL_VERSION, "time": 0.0,
                               "stage": stage, "fraction": fraction, "message": ""})
            follower.take(line.encode())
            seen.append(feedback.progress())
    assert seen == sorted(seen)
    assert seen[0] == 0 and seen[-1] == 100
