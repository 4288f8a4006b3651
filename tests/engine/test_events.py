"""The engine's progress events say how long a stage has left, once that can be told."""

from __future__ import annotations

import io
import json

import pytest

from engine.events import EventSink, StageClock, duration, time_left


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_estimate_is_the_rate_since_the_stage_last_stood_still():
    time = FakeTime()
    clock = StageClock(min_seconds=10.0, min_fraction=0.02, clock=time)
    assert clock.seconds_left("prompts", 0.0) is None  # loading the model
    time.now = 30.0
    assert clock.seconds_left("prompts", 0.0) is None  # still 0: the clock restarts here
    time.now = 50.0
    # 0.2 done in the 20 s since it stood still: 0.8 left at that rate is 80 s (not the 200 s
    # that counting the 30 s of loading would give)
    assert clock.seconds_left("prompts", 0.2) == pytest.approx(80.0)
    time.now = 70.0
    assert clock.seconds_left("prompts", 0.5) == pytest.approx(40.0 * 0.5 / 0.5)


def test_no_estimate_too_early_nor_once_done_and_each_stage_its_own():
    time = FakeTime()
    clock = StageClock(min_seconds=10.0, min_fraction=0.02, clock=time)
    clock.seconds_left("srel", 0.0)
    clock.seconds_left("prompts", 0.0)
    time.now = 5.0
    assert clock.seconds_left("srel", 0.5) is None  # under min_seconds
    time.now = 20.0
    assert clock.seconds_left("prompts", 0.01) is None  # under min_fraction
    assert clock.seconds_left("srel", 0.8) == pytest.approx(20.0 * 0.2 / 0.8)
    assert clock.seconds_left("prompts", 0.1) == pytest.approx(20.0 * 0.9 / 0.1)
    assert clock.seconds_left("srel", 1.0) is None  # done
    time.now = 25.0
    assert clock.seconds_left("srel", 0.5) is None  # a stage run again starts a new clock
    time.now = 40.0
    assert clock.seconds_left("srel", 0.4) is None  # moved back: the clock restarts
    time.now = 60.0
    assert clock.seconds_left("srel", 0.6) == pytest.approx(20.0 * 0.4 / 0.2)


def test_progress_events_carry_the_estimate_only_when_there_is_one():
    time = FakeTime()
    stream = io.StringIO()
    sink = EventSink("jsonl", stream, clock=StageClock(clock=time))
    sink.progress("srel", 0.0, "epoch 0/2000")
    time.now = 60.0
    sink.progress("srel", 0.25, "epoch 500/2000")
    sink.progress("srel", 1.0, "2000 epochs")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e.get("seconds_left") for e in events] == [None, 180.0, None]
    assert "seconds_left" not in events[0] and "seconds_left" not in events[2]


def test_the_text_progress_bar_shows_the_estimate():
    time = FakeTime()
    stream = io.StringIO()
    sink = EventSink("text", stream, clock=StageClock(clock=time))
    sink.progress("prompts", 0.0, "crime: 0 of 10000 region vectors cached")
    time.now = 120.0
    sink.progress("prompts", 0.04, "crime: encoded 400 of 10000 regions")
    last = stream.getvalue().split("\r")[-1]
    assert "about 48 min left" in last and "encoded 400 of 10000" in last


@pytest.mark.parametrize("seconds, text", [(0, "10 s"), (4, "10 s"), (44, "40 s"),
                                           (59.4, "60 s"), (60, "1 min"), (89, "1 min"),
                                           (91, "2 min"), (2880, "48 min"),
                                           (3599, "1 h 0 min"), (4800, "1 h 20 min")])
def test_durations_are_rounded_for_people(seconds, text):
    assert duration(seconds) == text


def test_the_last_seconds_are_not_given_a_false_precision():
    assert time_left(0.2) == "a few seconds left"
    assert time_left(9.4) == "a few seconds left"
    assert time_left(12) == "about 10 s left"
    assert time_left(2880) == "about 48 min left"
