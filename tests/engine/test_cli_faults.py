"""Faults a user meets, through `python -m engine` as the plugin runs it (a subprocess, JSON lines).

Each test checks what the user would: the exit code, one clear `error` event (no traceback on
stdout), no half-written output in --out-dir, and the user's input files byte-identical before
and after the run. docs/faults.md lists the faults and points here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTPUT_NAMES = ("regions.gpkg", "regions.csv", "model", "embed.json", "metrics.json",
                "report.html", "dataset.json")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _needs(module: str) -> None:
    """Skips while a part of the engine that this fault goes through is not written yet."""
    if not (ROOT / (module.replace(".", "/") + ".py")).exists():
        pytest.skip(f"{module} does not exist yet")


# ---------------------------------------------------------------- tiny layers
@pytest.fixture(scope="module")
def layers(tmp_path_factory) -> Path:
    """A 4 x 3 grid of regions (UTM 18N) with two numeric fields and a target, and categorised
    points; written once per module into a folder that every test hashes."""
    import geopandas as gpd
    from shapely.geometry import Point, box

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    cells = [box(x * 500.0, y * 500.0, (x + 1) * 500.0, (y + 1) * 500.0)
             for y in range(3) for x in range(4)]
    regions = gpd.GeoDataFrame({
        "zone": [f"Z{i:02d}" for i in range(12)],
        "pop": rng.integers(100, 5000, 12).astype(float),
        "jobs": rng.integers(10, 900, 12).astype(float),
        "crime": rng.integers(5, 300, 12).astype(float),
    }, geometry=cells, crs="EPSG:32618")
    regions.to_file(folder / "regions.gpkg", layer="regions", driver="GPKG", engine="pyogrio")
    xy = rng.uniform(0, [2000.0, 1500.0], size=(120, 2))
    points = gpd.GeoDataFrame({"cat": rng.choice(["shop", "school", "park"], 120)},
                              geometry=[Point(x, y) for x, y in xy], crs="EPSG:32618")
    points.to_file(folder / "poi.gpkg", layer="poi", driver="GPKG", engine="pyogrio")
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def untouched(layers):
    """Fails the test when any input file changed (or a file appeared) during it."""
    before = _digest(layers)
    yield layers
    assert _digest(layers) == before, "the user's input files changed"


def _data_args(layers: Path, epochs: int = 2) -> list[str]:
    return ["--regions", f"{layers / 'regions.gpkg'}|layername=regions", "--id-field", "zone",
            "--fields", "pop,jobs", "--points", f"{layers / 'poi.gpkg'}|category=cat",
            "--epochs", str(epochs), "--embedding-size", "8", "--language-model", "none",
            "--device", "cpu", "--events", "jsonl"]


# ---------------------------------------------------------------- running the engine
def _events(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON event: no traceback, no stray print."""
    events = []
    for line in stdout.splitlines():
        event = json.loads(line)
        assert event["event"] in ("start", "progress", "log", "result", "error"), line
        events.append(event)
    return events


def _run(args: list[str], env: dict | None = None, timeout: float = 300):
    done = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in done.stdout
    return done.returncode, _events(done.stdout), done.stderr


def _error(events: list[dict]) -> dict:
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1, events
    assert events[-1] is errors[0]  # the error is the last word
    assert not [e for e in events if e["event"] == "result"]
    return errors[0]


def _outputs(out_dir: Path) -> list[str]:
    """What a user sees in the output folder (the engine's hidden staging folders excepted)."""
    if not out_dir.exists():
        return []
    return sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))


@contextmanager
def _engine_process(args: list[str]):
    process = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def _read_until(process: subprocess.Popen, stage: str, timeout: float = 240) -> list[dict]:
    """Reads events until a progress event of `stage` arrives (the run is then inside it)."""
    deadline = time.monotonic() + timeout
    seen = []
    for line in process.stdout:
        event = json.loads(line)
        seen.append(event)
        if event["event"] == "progress" and event["stage"] == stage:
            return seen
        assert event["event"] != "error", f"the run failed before {stage}: {event}"
        assert time.monotonic() < deadline, f"no {stage} progress within {timeout} s"
    pytest.fail(f"the engine ended before stage {stage}: {seen}\n{process.stderr.read()}")


# ---------------------------------------------------------------- killed and cancelled runs
@pytest.mark.parametrize("stage", ["srel", "write"])
def test_sigkill_leaves_all_or_nothing_in_the_output_folder(untouched, tmp_path, stage):
    _needs("engine.data.build")
    out = tmp_path / "out"
    epochs = 100000 if stage == "srel" else 3  # "write": killed while the outputs are written
    with _engine_process(["embed", *_data_args(untouched, epochs), "--out-dir", str(out)]) as p:
        _read_until(p, stage)
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
    present = [n for n in _outputs(out) if n in OUTPUT_NAMES]
    # The outputs are moved into place only after all were written: none, or every one.
    assert present in ([], ["embed.json", "model", "regions.gpkg"]), present
    assert _outputs(out) == present  # nothing else visible either


def test_sigterm_cancels_with_exit_130_and_writes_nothing(untouched, tmp_path):
    _needs("engine.data.build")
    out = tmp_path / "out"
    with _engine_process(["embed", *_data_args(untouched, 100000), "--out-dir", str(out)]) as p:
        _read_until(p, "srel")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 130
        rest = [json.loads(line) for line in p.stdout.read().splitlines()]
        assert "Traceback" not in p.stderr.read()
    error = _error(rest)
    assert error["kind"] == "cancelled"
    assert "cancelled" in error["message"]
    assert _outputs(out) == []
    assert not out.exists() or list(out.iterdir()) == []  # no staging folder left either


def test_a_second_run_after_a_kill_succeeds(untouched, tmp_path):
    _needs("engine.data.build")
    out = tmp_path / "out"
    with _engine_process(["embed", *_data_args(untouched, 3), "--out-dir", str(out)]) as p:
        _read_until(p, "write")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    rc, events, stderr = _run(["embed", *_data_args(untouched, 2), "--out-dir", str(out),
                               "--overwrite"])
    assert rc == 0, stderr
    assert events[-1]["event"] == "result"
    assert _outputs(out) == ["embed.json", "model", "regions.gpkg"]


# ---------------------------------------------------------------- bad input at start
@pytest.mark.parametrize(("content", "words"), [
    ("{not json", "cannot read the job file"),
    ("[1, 2, 3]", "one JSON object"),
    ("", "cannot read the job file"),
])
def test_broken_job_file_is_an_input_error(untouched, tmp_path, content, words):
    _needs("engine.data.build")
    job = tmp_path / "job.json"
    job.write_text(content)
    rc, events, stderr = _run(["train", "--job", str(job), "--events", "jsonl",
                               "--out-dir", str(tmp_path / "out")])
    assert rc == 2
    error = _error(events)
    assert error["kind"] == "input"
    assert words in error["message"]
    assert error["layer"] == str(job)
    assert "Traceback" not in stderr
    assert _outputs(tmp_path / "out") == []


def test_missing_job_file_is_an_input_error(tmp_path):
    _needs("engine.data.build")
    rc, events, stderr = _run(["train", "--job", str(tmp_path / "nowhere.json"),
                               "--events", "jsonl", "--out-dir", str(tmp_path / "out")])
    assert rc == 2 and _error(events)["kind"] == "input"
    assert "Traceback" not in stderr


def test_missing_region_layer_and_unknown_field_name_the_layer_and_field(untouched, tmp_path):
    _needs("engine.data.build")
    args = _data_args(untouched)
    args[1] = str(tmp_path / "no-such-regions.gpkg")
    rc, events, stderr = _run(["embed", *args, "--out-dir", str(tmp_path / "out")])
    assert rc == 2, stderr
    error = _error(events)
    assert error["kind"] == "input" and "no-such-regions.gpkg" in (error["layer"] or "")
    args = _data_args(untouched)
    args[args.index("pop,jobs")] = "pop,no_such_field"
    rc, events, stderr = _run(["embed", *args, "--out-dir", str(tmp_path / "out")])
    assert rc == 2, stderr
    error = _error(events)
    assert error["kind"] == "input" and error["field"] == "no_such_field"
    assert error["hint"]
    assert _outputs(tmp_path / "out") == []


@pytest.mark.parametrize("level", ["1", "-0.1", "1.5"])
def test_an_interval_level_outside_0_to_1_is_refused_before_any_work(untouched, tmp_path,
                                                                     level):
    _needs("engine.data.build")
    rc, events, stderr = _run(["train", *_data_args(untouched), "--targets", "crime",
                               "--interval-level", level, "--out-dir", str(tmp_path / "out")])
    assert rc == 2, stderr
    error = _error(events)
    assert error["kind"] == "input" and "interval level" in error["message"]
    assert not any(e["event"] == "progress" and e.get("stage") == "srel" for e in events)
    assert _outputs(tmp_path / "out") == []


# ---------------------------------------------------------------- memory
@pytest.fixture(scope="module")
def big_grid(tmp_path_factory) -> Path:
    """600 small square regions: cheap to read, and with a large SREL config far beyond RAM."""
    import geopandas as gpd
    from shapely.geometry import box

    folder = tmp_path_factory.mktemp("big")
    cells = [box(x * 100.0, y * 100.0, (x + 1) * 100.0, (y + 1) * 100.0)
             for y in range(20) for x in range(30)]
    rng = np.random.default_rng(1)
    frame = gpd.GeoDataFrame({"pop": rng.integers(0, 1000, 600).astype(float),
                              "jobs": rng.integers(0, 500, 600).astype(float)},
                             geometry=cells, crs="EPSG:32618")
    frame.to_file(folder / "grid.gpkg", layer="grid", driver="GPKG", engine="pyogrio")
    return folder


def test_a_job_larger_than_memory_is_refused_before_it_starts(big_grid, tmp_path):
    _needs("engine.data.build")
    from engine.memory import available_bytes

    before = _digest(big_grid)
    # 1024 heads x 64 layers of dense 600 x 600 attention: about 750 GB by the estimate.
    job = {"regions": {"path": str(big_grid / "grid.gpkg"), "layer": "grid",
                       "fields": ["pop", "jobs"]},
           "srel": {"hidden": 1024, "heads": 1024, "layers": 64},
           "out_dir": str(tmp_path / "out"), "embedding_size": 8, "language_model": "none",
           "device": "cpu"}
    if available_bytes("cpu") > 600 * 1024**3:
        pytest.skip("this machine has enough memory for the job meant to be too large")
    (tmp_path / "job.json").write_text(json.dumps(job))
    started = time.monotonic()
    rc, events, stderr = _run(["embed", "--job", str(tmp_path / "job.json"), "--events", "jsonl"])
    assert rc == 3, stderr
    error = _error(events)
    assert error["kind"] == "memory"
    assert "GB" in error["message"] and "not started" in error["message"]
    assert error["hint"]
    assert not [e for e in events if e["event"] == "progress" and e["stage"] == "srel"]
    assert time.monotonic() - started < 120
    assert _outputs(tmp_path / "out") == []
    assert _digest(big_grid) == before


# ---------------------------------------------------------------- where outputs cannot go
def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@contextmanager
def _tmpfs(path: Path, options: str):
    if not _mount_tmpfs(path, options):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("inside", [
    pytest.param(True, id="new-subfolder"),
    pytest.param(False, id="existing-folder"),
])
def test_read_only_output_folder_is_an_input_error(untouched, tmp_path, inside):
    _needs("engine.data.build")
    with _tmpfs(tmp_path / "readonly", "ro,size=1m") as folder:
        out = folder / "results" if inside else folder
        rc, events, stderr = _run(["embed", *_data_args(untouched), "--out-dir", str(out)])
        assert rc == 2, stderr
        error = _error(events)
        assert error["kind"] == "input"
        assert str(out) in (error["layer"] or "") and error["hint"]
        assert "Traceback" not in stderr


def test_disk_full_while_writing_leaves_nothing_and_says_so(untouched, tmp_path):
    _needs("engine.data.build")
    with _tmpfs(tmp_path / "small-disk", "size=64k") as folder:
        out = folder / "results"
        rc, events, stderr = _run(["embed", *_data_args(untouched), "--out-dir", str(out)])
        assert rc != 0
        error = _error(events)
        assert error["kind"] in ("input", "internal")
        assert "space" in error["message"].lower() or "full" in error["message"].lower(), error
        assert _outputs(out) == []
        assert not out.exists() or list(out.iterdir()) == []  # the staging folder went too


# ---------------------------------------------------------------- models
@pytest.fixture(scope="module")
def trained_model(layers, tmp_path_factory) -> Path:
    """A model trained on fields pop,jobs with target crime (the engine's own `train`)."""
    _needs("engine.data.build")
    _needs("engine.predict")
    _needs("engine.tasks")
    out = tmp_path_factory.mktemp("trained")
    rc, events, stderr = _run(["train", *_data_args(layers), "--targets", "crime", "--folds",
                               "2", "--out-dir", str(out)])
    if rc != 0:
        pytest.skip(f"training the model for the predict faults failed: {events[-1:]}")
    return out / "model"


def test_corrupt_model_file_is_an_input_error(untouched, trained_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    weights = sorted(model.rglob("*.safetensors"))
    assert weights, "the model folder holds no safetensors file"
    weights[0].write_bytes(b"this is not a safetensors file" * 10)
    before = _digest(model)
    rc, events, stderr = _run(["predict", *_data_args(untouched), "--model", str(model),
                               "--out-dir", str(tmp_path / "out")])
    assert rc == 2, stderr
    error = _error(events)
    assert error["kind"] == "input" and error["hint"]
    assert "model" in error["message"].lower()
    assert _digest(model) == before
    assert _outputs(tmp_path / "out") == []


def test_model_folder_missing_its_config_is_an_input_error(untouched, trained_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    for config in model.rglob("*.json"):
        config.unlink()
    rc, events, stderr = _run(["predict", *_data_args(untouched), "--model", str(model),
                               "--out-dir", str(tmp_path / "out")])
    assert rc == 2, stderr
    assert _error(events)["kind"] == "input"
    assert _outputs(tmp_path / "out") == []


def test_model_trained_on_other_fields_is_an_input_error(untouched, trained_model, tmp_path):
    args = _data_args(untouched)
    args[args.index("pop,jobs")] = "pop"  # the model was trained on pop and jobs
    rc, events, stderr = _run(["predict", *args, "--model", str(trained_model),
                               "--out-dir", str(tmp_path / "out")])
    assert rc == 2, stderr
    error = _error(events)
    assert error["kind"] == "input"
    assert "fields view" in error["message"]  # the view of numeric fields differs
    assert "1 here, 2 in the model" in error["message"]
    assert "same" in error["hint"] and "fields" in error["hint"]
    assert _outputs(tmp_path / "out") == []


TRAIN_OUTPUTS = ["metrics.json", "model", "regions.gpkg", "report.html"]


@pytest.mark.parametrize("stage", ["data", "srel", "fit", "write"])
def test_cancel_at_every_stage_leaves_all_or_nothing(untouched, tmp_path, stage):
    """SIGTERM (what the plugin's Cancel sends) as soon as `train` enters each stage."""
    _needs("engine.data.build")
    out = tmp_path / "out"
    epochs = 100000 if stage == "srel" else 5
    args = ["train", *_data_args(untouched, epochs), "--targets", "crime", "--folds", "3",
            "--out-dir", str(out)]
    with _engine_process(args) as p:
        _read_until(p, stage)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=120)
        rest = [json.loads(line) for line in p.stdout.read().splitlines()]
        assert "Traceback" not in p.stderr.read()
    present = [n for n in _outputs(out) if n in OUTPUT_NAMES]
    if stage == "srel":
        assert rc == 130  # 100,000 epochs: the signal certainly lands inside SREL
    if rc == 130:
        assert _error(rest)["kind"] == "cancelled"
        assert present == []
    else:  # the signal came after the last output was in place: the run is complete
        assert rc == 0 and rest[-1]["event"] == "result"
        assert present == TRAIN_OUTPUTS
    assert _outputs(out) == present  # no half-written file, no leftover visible


def test_a_locked_geopackage_is_an_input_error_and_stays_untouched(untouched, tmp_path):
    """Another program holds an exclusive lock on the region GeoPackage (an edit session)."""
    import sqlite3

    _needs("engine.data.build")
    regions = untouched / "regions.gpkg"
    lock = sqlite3.connect(regions, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        rc, events, stderr = _run(["prepare", *_data_args(untouched), "--out-dir",
                                   str(tmp_path / "out")])
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert rc == 2, stderr
    error = _error(events)
    assert error["kind"] == "input" and "regions.gpkg" in error["message"]
    assert "lock" in error["hint"]
    assert _outputs(tmp_path / "out") == []
