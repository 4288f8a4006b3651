"""Language-model batches side by side on the CPU (engine.language.models._run_batches): the
same vectors as one batch at a time, as many lanes as the caller's threads allow, read again
as the encode goes, and a stop that ends it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from conftest import load_tiny

from engine.language.models import EncodeOptions, _run_batches
from engine.language.templates import task_template

TEXTS = [f"Region {k}: {40 + k / 10:.1f}N 73.{k}W. POIs {k}: food {k} (100%)." for k in range(9)]


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("fixture", ["tiny_causal_dir", "tiny_encoder_dir"])
def test_two_lanes_give_the_vectors_of_one(fixture, request, threads):
    threads(2)
    lm = load_tiny(request.getfixturevalue(fixture))
    prefix = task_template("crime")
    one = lm.encode(TEXTS, prefix, batch_size=2, workers=1, worker_threads=1)
    two = lm.encode(TEXTS, prefix, batch_size=2, workers=2, worker_threads=1)
    np.testing.assert_array_equal(two, one)
    assert lm.encode(TEXTS, prefix, batch_size=2).shape == one.shape  # the default: two lanes
    assert torch.get_num_threads() == 2  # the caller's threads are left as they were


class Recorder:
    """A compute() that takes a while and records how many batches ran at once."""

    def __init__(self, width: int = 3) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.seen: list[int] = []  # batches running when each one started
        self.threads: list[int] = []  # torch threads inside each batch
        self.width = width

    def __call__(self, batch: list[int]) -> np.ndarray:
        with self.lock:
            self.now += 1
            self.seen.append(self.now)
        self.threads.append(torch.get_num_threads())
        time.sleep(0.05)
        with self.lock:
            self.now -= 1
        return np.full((len(batch), self.width), float(batch[0]), dtype=np.float32)


def test_lanes_follow_the_callers_threads_as_the_encode_goes(threads):
    """One core lent elsewhere at the start (the caller's threads are 1): one batch at a time;
    once the caller has two threads again (here after the second batch), two side by side.
    Every batch runs on the one thread it was given, and every row is filled."""
    threads(1)
    compute, reports = Recorder(), []

    def progress(done, total):
        reports.append(done)
        if len(reports) == 2:
            torch.set_num_threads(2)

    batches = [[2 * k, 2 * k + 1] for k in range(8)]
    out = np.zeros((16, 3), dtype=np.float32)
    _run_batches(batches, compute, out, EncodeOptions(workers=2, worker_threads=1), progress)
    assert compute.seen[:2] == [1, 1]
    assert max(compute.seen[2:]) == 2
    assert set(compute.threads) == {1}
    assert reports == sorted(reports) and reports[-1] == 16
    np.testing.assert_array_equal(out[:, 0], np.repeat(np.arange(0, 16, 2), 2))
    assert torch.get_num_threads() == 2  # the caller's count, not the workers'


def test_one_thread_means_one_lane(threads):
    threads(1)
    compute = Recorder()
    out = np.zeros((6, 3), dtype=np.float32)
    _run_batches([[0, 1], [2, 3], [4, 5]], compute, out,
                 EncodeOptions(workers=2, worker_threads=1), None)
    assert compute.seen == [1, 1, 1]
    assert torch.get_num_threads() == 1


def test_a_progress_that_raises_stops_the_encode(threads):
    """The caller stops (a failure beside it, a cancelled run): the error reaches it and the
    batches not yet started never run."""
    threads(2)
    compute = Recorder()

    def progress(done, total):
        raise KeyboardInterrupt

    out = np.zeros((20, 3), dtype=np.float32)
    with pytest.raises(KeyboardInterrupt):
        _run_batches([[k] for k in range(20)], compute, out,
                     EncodeOptions(workers=2, worker_threads=1), progress)
    assert len(compute.seen) <= 3  # the first two in flight and at most one more
    assert torch.get_num_threads() == 2


def test_a_failing_batch_is_raised_in_the_caller(threads):
    threads(2)

    def compute(batch):
        if batch[0] == 3:
            raise RuntimeError("out of memory in batch 3")
        return np.zeros((len(batch), 2), dtype=np.float32)

    with pytest.raises(RuntimeError, match="batch 3"):
        _run_batches([[k] for k in range(6)], compute, np.zeros((6, 2), dtype=np.float32),
                     EncodeOptions(workers=2, worker_threads=1), None)


def test_workers_zero_runs_in_the_calling_thread():
    """A GPU: one batch after the other in the caller's thread."""
    names = []

    def compute(batch):
        names.append(threading.current_thread().name)
        return np.zeros((len(batch), 2), dtype=np.float32)

    _run_batches([[0], [1]], compute, np.zeros((2, 2), dtype=np.float32),
                 EncodeOptions(workers=0), None)
    assert names == [threading.current_thread().name] * 2
