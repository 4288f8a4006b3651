"""The machine check that every benchmark result carries, and how the report shows it."""

from __future__ import annotations

from bench.env import calibration, environment
from bench.report import _busy_note, _env_line


def test_calibration_measures_three_positive_rates():
    check = calibration(seconds=0.05)
    assert set(check) == {"matmul_gflops", "small_ops_per_ms", "copy_gb_per_s", "threads"}
    assert all(check[k] > 0 for k in ("matmul_gflops", "small_ops_per_ms", "copy_gb_per_s"))


def test_the_environment_line_shows_the_check_at_the_end_and_the_start():
    env = environment("cpu", calibrate=False)
    assert env["calibration"] is None and "machine check" not in _env_line(env)
    env["calibration"] = {"matmul_gflops": 95.2, "small_ops_per_ms": 13.1, "copy_gb_per_s": 15.0,
                          "threads": 2}
    env["calibration_before"] = {"matmul_gflops": 70.4, "small_ops_per_ms": 9.9,
                                 "copy_gb_per_s": 9.5, "threads": 2}
    line = _env_line(env)
    assert "machine check (2 threads): matmul 95 GFLOP/s, 13.1 small ops/ms, copy 15.0 GB/s" in line
    assert "(at the start: matmul 70 GFLOP/s, 9.9 small ops/ms, copy 9.5 GB/s)" in line


def test_the_busy_warning_discounts_the_benchmarks_own_threads():
    def env(load: float) -> dict:
        return {"load_average": [load, load, load], "torch_threads": 2, "cpu_count": 2}

    assert _busy_note([env(2.0), env(1.4)]) == ""  # the benchmark's 2 threads on 2 cores
    note = _busy_note([env(2.0), env(3.1)])
    assert "up to 3.1 on 2 cores" in note and "other processes shared the CPUs" in note
