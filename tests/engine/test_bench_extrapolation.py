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
