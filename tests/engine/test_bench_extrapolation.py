"""The extrapolation study's rows and table (`python -m bench.extrapolation_study`)."""

from __future__ import annotations

import numpy as np


def test_the_study_counts_the_flags_each_fold_model_gave_its_held_out_regions():
    from bench.extrapolation_study import run_study, table
    from engine.data.synthetic import make_synthetic_city

    rows = run_study(None, synthetic_seeds=(21,), real=False, log=lambda _: None)
    city = make_synthetic_city(77, 21, kind="grid")
    targets = [t for t in ("crime", "check_in", "income") if t in city.targets]
    assert [(r["target"], r["shuffled"]) for r in rows] == [(t, s) for t in targets
                                                             for s in (False, True)]
    for row in rows:
        labelled = int(np.isfinite(city.targets[row["target"]]).sum())
        assert row["evaluated"] == labelled
        assert row["flagged"] <= row["inputs_beyond"] + row["prediction_beyond"]
        assert max(row["inputs_beyond"], row["prediction_beyond"]) <= row["flagged"]
        assert 0.0 <= row["error_share"] <= 1.0 and (row["flagged"] or not row["error_share"])
    lines = table(rows).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| 77-region synthetic cities | 6 |")
    assert f"| {sum(r['evaluated'] for r in rows):,} |" in lines[2]
    # the same runs' 90% intervals: each row says how many held-out values they held
    for row in rows:
        interval = row["interval"]
        assert interval["level"] == 0.9 and 0.75 <= interval["coverage"] <= 1.0
        assert len(interval["coverage_by_fifth"]) == 5


def test_the_interval_table_averages_the_rows_of_each_group():
    from bench.extrapolation_study import interval_table

    def row(place, coverage, fifths, size_power=0.0, scaled=False):
        return {"place": place, "interval": {"coverage": coverage, "coverage_by_fifth": fifths,
                                             "size_power": size_power, "scaled": scaled}}

    rows = [row("manhattan", 0.9, [1.0, 0.9, 0.9, 0.9, 0.8], 0.5),
            row("manhattan", 0.8, [0.8, 0.8, 0.8, 0.8, 0.8]),
            row("tokyo", 0.85, None, 1.0, True)]
    lines = interval_table(rows).splitlines()
    assert lines[2] == "| Manhattan | 2 | 85.0% (80.0% - 90.0%) | 90% / 85% / 85% / 85% / 80% | 1 / 0 |"
    assert lines[3] == "| real places | 1 | 85.0% (85.0% - 85.0%) | - | 1 / 1 |"


def test_the_benchmark_section_shows_the_table_or_nothing():
    from bench.report import extrapolation_flags_section

    rows = [{"place": "manhattan", "target": "crime", "shuffled": False, "evaluated": 180,
             "r2": 0.77, "flagged": 2, "inputs_beyond": 1, "prediction_beyond": 1,
             "error_share": 0.1}]
    text = "\n".join(extrapolation_flags_section(
        {"rows": rows, "environment": {"date": "2026-12-07", "git_commit": "abc"}}))
    assert "### Which predictions the extrapolation flag marks" in text
    assert "| Manhattan | 1 | 180 | 2 (1.1%) | 10.0% | 0 |" in text
    assert extrapolation_flags_section(None) == [] and extrapolation_flags_section({}) == []
