"""`python -m engine evaluate --benchmark`: another city's folder is evaluated with that city's
split from the literature unless the options choose another; the options reach the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.cli import build_parser, job_from_args

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _evaluate(folder: Path, out: Path, *options: str) -> dict:
    """metrics.json of a tiny evaluate run (2 SREL epochs, no language model) on `folder`."""
    done = subprocess.run(
        [sys.executable, "-m", "engine", "evaluate", "--benchmark", str(folder), *options,
         "--epochs", "2", "--embedding-size", "8", "--language-model", "none",
         "--device", "cpu", "--out-dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "benchmark split:" in done.stdout + done.stderr
    return json.loads((out / "metrics.json").read_text())


def test_chicago_is_evaluated_on_its_literature_split_unless_the_options_say_otherwise(
        tmp_path, hafusion_folder):
    folder = hafusion_folder(tmp_path / "data_Chi", n=30)
    chicago = _evaluate(folder, tmp_path / "a", "--targets", "crime,checkIn")
    assert (chicago["folds"], chicago["shuffle"], chicago["fold_seed"]) == (25, True, 2024)
    assert chicago["tasks"]["check_in"]["labelled"] == 26  # the 4 regions without check-ins
    assert chicago["tasks"]["crime"]["labelled"] == 30
    assert set(chicago["tasks"]) == {"crime", "check_in"}  # HAFusion's task names
    final = chicago["tasks"]["crime"]["final_model"]
    assert "extrapolation_guard" in final and "shrink_lambda" in final

    chosen = _evaluate(folder, tmp_path / "b", "--targets", "crime", "--folds", "3",
                       "--no-shuffle")
    assert (chosen["folds"], chosen["shuffle"], chosen["fold_seed"]) == (3, False, None)


def test_every_given_option_reaches_the_job_and_none_is_invented():
    args = build_parser().parse_args(["evaluate", "--benchmark", "x", "--out-dir", "o",
                                      "--no-shuffle", "--seed", "0", "--fold-seed", "0",
                                      "--city", "chicago"])
    job = job_from_args(args)
    assert job["shuffle"] is False and job["seed"] == 0 and job["fold_seed"] == 0
    assert job["city"] == "chicago"
    bare = job_from_args(build_parser().parse_args(["evaluate", "--benchmark", "x",
                                                    "--out-dir", "o"]))
    assert not {"shuffle", "seed", "fold_seed", "folds", "city", "overwrite"} & set(bare)
