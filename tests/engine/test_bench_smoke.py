"""Smoke test of the benchmark harness: a 20-region synthetic city in the literature's folder
layout, 1 seed, 2 folds, 2 SREL epochs, no language model; the document must show the tables."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
synthetic = pytest.importorskip("engine.data.synthetic")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _benchmark_folder(folder, n=20, seed=0):
    """The synthetic city written as poi_dist.npy, landUse_dist.npy, mob_dist.npy, targets..."""
    city = synthetic.make_synthetic_city(n, seed=seed)
    np.save(folder / "poi_dist.npy", city.views["poi"].matrix.astype(np.int32))
    np.save(folder / "landUse_dist.npy", city.views["landuse"].matrix.astype(np.int32))
    np.save(folder / "mob_dist.npy", city.views["mobility"].matrix.toarray().astype(np.int64))
    np.save(folder / "crime_counts.npy", city.targets["crime"])
    np.save(folder / "check_counts.npy", city.targets["check_in"])
    np.save(folder / "centroids.npy", city.priors.centroids)
    classes = {str(i): int(c) for i, c in enumerate(city.classes["landuse_class"])}
    (folder / "landuse_clusters.json").write_text(json.dumps(classes))
    return city


def test_quality_sweep_and_document(tmp_path):
    from bench.quality import QualitySettings, run_quality
    from bench.report import render
    from bench.sweep import measure_size

    data = tmp_path / "city"
    data.mkdir()
    _benchmark_folder(data)
    settings = QualitySettings(seeds=(0,), tasks=("crime", "check_in", "carbon"), folds=2,
                               srel_epochs=2, language_model="none", ablation_models=(),
                               ablations=False, paper_protocol=True, gbm=False,
                               cache_dir=str(tmp_path / "cache"),
                               predictor_options={"inner_folds": 2}, literature_clusters=2)
    quality = run_quality(data, settings, log=lambda message: None)

    assert quality["tasks"] == ["crime", "check_in"]
    assert quality["missing_tasks"] == ["carbon"]
    crime_clean = {r["model"]: r for r in quality["rows"]
                   if r["task"] == "crime" and r["protocol"] == "clean"}
    assert {"raw_ridge1", "raw_ridgecv", "srel_ridge1", "method"} <= set(crime_clean)
    for row in quality["rows"]:
        assert np.isfinite([row["mae"], row["rmse"], row["r2"]]).all()
        assert row["optimistic"] == (row["protocol"] == "paper")
    paper = [r for r in quality["rows"] if r["protocol"] == "paper"]
    assert paper and all(r["task"] == "crime" or r["task"] == "check_in" for r in paper)
    assert {c["model"] for c in quality["clustering"]} == {"raw_features", "srel"}
    for row in quality["clustering"]:  # k = the classes present, and the published figures' k
        assert row["clusters"] > 2 and row["literature_k"] == 2
        assert 0 <= row["at_literature_k"]["nmi"] <= 1
    assert quality["srel"]["srel"]["epochs"] == 2

    row = measure_size(20, device="cpu", srel_epochs="2", encode_model="none", encode_max=0,
                       predict=False)
    assert row["srel"]["epochs"] == 2 and row["srel"]["path"] == "dense"
    assert row["peak_rss_bytes"] >= row["baseline_rss_bytes"] > 0
    sweep = {"environment": {"date": "now", "load_average": [0.1, 0.1, 0.1], "cpu_count": 2},
             "settings": {"sizes": [20], "srel_epochs": "2", "encode": "none",
                          "encode_max": 0, "predict": False},
             "rows": [{**row, "process_seconds": 1.0}]}

    text = render({"mode": "quick", "quality": quality, "sweep_cpu": sweep}, tmp_path, None)
    assert "Paper protocol: OPTIMISTIC" in text
    assert "| raw features -> Ridge(alpha=1) (literature) |" in text
    assert "published: HAFusion" not in text  # Manhattan's published rows: not beside a city
    assert "10 folds" not in text.split("## 1. Quality")[1].split("###")[0]  # the folds that ran
    k = quality["clustering"][0]["clusters"]
    assert f"| embedding | NMI (k = {k}, the classes present) | ARI | NMI (KMeans(2), as " in text
    assert "| 20 | dense | 2 (2000) |" in text
    assert "not run in this mode" in text  # N = 10,000 goal: honest about not measuring it


def test_the_text_length_a_throughput_goal_needs_is_read_off_the_measured_rows():
    from bench.report import GOALS, _length_needed

    def rows(fixed_ms: float, per_token_ms: float) -> dict:
        return {"text_tokens_mean": 111, "threads": 2, "regions": 32, "rows": [
            {"prompt": "full", "text_tokens": t, "regions_per_second": 1000 / (
                fixed_ms + per_token_ms * t)} for t in (32, 64, 128)]}

    goal_ms = 1000 / GOALS["prompt_rps"]
    line = _length_needed(rows(goal_ms / 2, 0.5))[1]
    assert f"at most {goal_ms / 2 / 0.5:.0f} tokens" in line and "against the 111" in line
    assert "out of reach" in _length_needed(rows(goal_ms * 1.5, 0.5))[1]


def test_a_later_sweep_of_one_size_replaces_the_older_row_and_says_where_it_came_from(tmp_path):
    from bench.run import _merged_sweeps

    def sweep(date: str, rows: list[dict]) -> dict:
        return {"environment": {"date": date}, "rows": rows}

    old = {"n_regions": 10000, "process_seconds": 270.0, "encode": {"skipped": "not asked"}}
    (tmp_path / "sweep-cpu.json").write_text(json.dumps(sweep("2026-11-24T09:00:00", [
        {"n_regions": 180, "process_seconds": 5.0}, old])))
    (tmp_path / "sweep-cpu-10k.json").write_text(json.dumps({**sweep("2026-11-24T15:00:00", [
        {"n_regions": 10000, "process_seconds": 1000.0, "encode": {"seconds": 700.0}}]),
        "note": "a test ran beside it"}))
    (tmp_path / "sweep-cpu-older.json").write_text(json.dumps(sweep("2026-11-23T10:00:00", [
        {"n_regions": 180, "process_seconds": 99.0}])))
    (tmp_path / "sweep-cpu-failed.json").write_text(json.dumps(sweep("2026-11-25T10:00:00", [
        {"n_regions": 180, "failed": "killed"}])))

    merged = _merged_sweeps(tmp_path, "cpu")

    by_n = {r["n_regions"]: r for r in merged["rows"]}
    assert [r["n_regions"] for r in merged["rows"]] == [180, 10000]
    assert by_n[10000]["process_seconds"] == 1000.0
    assert by_n[10000]["source"].startswith("sweep-cpu-10k.json")
    assert "a test ran beside it" in by_n[10000]["source"]  # what the file says of its run
    assert by_n[180]["process_seconds"] == 5.0 and "source" not in by_n[180]
    assert _merged_sweeps(tmp_path, "cuda") is None
    assert merged["end_to_end"][10000]["process_seconds"] == 1000.0

    # A later run of SREL alone at N = 10,000 is the table's row; the end-to-end figure stays
    # the latest run that encoded the prompt vectors.
    (tmp_path / "sweep-cpu-10k-srel.json").write_text(json.dumps(sweep("2026-11-26T10:00:00", [
        {"n_regions": 10000, "process_seconds": 300.0, "encode": {"skipped": "not asked"}}])))
    merged = _merged_sweeps(tmp_path, "cpu")
    assert {r["n_regions"]: r for r in merged["rows"]}[10000]["process_seconds"] == 300.0
    assert merged["end_to_end"][10000]["process_seconds"] == 1000.0


def test_a_result_that_outlived_a_commit_names_both():
    from bench.report import _env_line

    assert "commit `abc`," in _env_line({"git_commit": "abc"})
    line = _env_line({"git_commit": "def", "git_commit_at_start": "abc"})
    assert "commit `abc` at its start, `def` at its end" in line


def test_a_full_run_of_some_tasks_replaces_only_their_rows_and_the_document_says_which_run():
    from bench.report import quality_section
    from bench.run import merge_quality

    def result(mode: str, tasks: list[str], r2: float, date: str) -> dict:
        settings = {"seeds": [0, 1, 2], "folds": 10, "shuffle": False, "srel_epochs": None,
                    "language_model": "smollm2"}
        rows = [{"task": t, "protocol": "clean", "model": "raw_ridgecv", "label": "RidgeCV",
                 "optimistic": False, "seconds": 1.0, "mae": 1.0, "rmse": 1.0, "r2": r2,
                 "runs": 3} for t in tasks]
        return {"data": "mh", "regions": 180, "tasks": tasks, "settings": settings, "rows": rows,
                "labelled": {t: 180 for t in tasks}, "mode": mode,
                "environment": {"date": date, "git_commit": mode},
                **({"quick_note": "Quick mode: fewer rows."} if mode == "quick" else {})}

    quick = result("quick", ["crime", "check_in", "income"], 0.5, "2026-11-24T13:00")
    merged = merge_quality(quick, result("full", ["check_in"], 0.9, "2026-11-24T16:00"))

    assert merged["tasks"] == ["crime", "check_in", "income"]
    assert {(r["task"], r["r2"]) for r in merged["rows"]} == {
        ("crime", 0.5), ("check_in", 0.9), ("income", 0.5)}
    assert merged["task_runs"]["check_in"]["mode"] == "full"
    assert merged["task_runs"]["income"]["mode"] == "quick"
    text = "\n".join(quality_section(merged))
    assert "**check_in**: full mode" in text and "**crime, income**: quick mode" in text
    busy = result("full", ["crime"], 0.7, "2026-11-24T17:00") | {"run_note": "CI ran beside"}
    again = merge_quality(merged, busy)  # `--note`: what else ran, kept with the task's run
    assert again["task_runs"]["check_in"]["date"] == "2026-11-24T16:00"
    assert again["task_runs"]["crime"]["mode"] == "full"
    assert "**crime**: full mode" in "\n".join(quality_section(again))
    assert "every row (`make bench-full`) (CI ran beside)" in "\n".join(quality_section(again))

    other_city = result("full", ["crime"], 0.7, "2026-11-24T17:00") | {"data": "chicago"}
    with pytest.raises(SystemExit, match="same data"):
        merge_quality(quick, other_city)


def test_each_task_run_names_its_cpu_and_weights_dtype_and_a_check_on_another_cpu_sits_beside():
    from bench.report import quality_checks_section, quality_section
    from bench.run import merge_quality

    def result(tasks, r2, cpu, dtype, date):
        rows = [{"task": t, "protocol": "clean", "model": model, "label": model,
                 "optimistic": False, "seconds": 1.0, "mae": 1.0, "rmse": 1.0, "r2": r2 + bump,
                 "r2_std": 0.01, "runs": 3}
                for t in tasks for model, bump in (("raw_ridgecv", 0.0), ("method", 0.02))]
        return {"data": "mh", "regions": 180, "tasks": tasks, "rows": rows, "mode": "full",
                "settings": {"seeds": [0, 1, 2], "folds": 10, "shuffle": False,
                             "srel_epochs": None, "language_model": "smollm2"},
                "labelled": {t: 180 for t in tasks}, "language_model_dtype": dtype,
                "clustering": [{"model": "srel", "label": "srel embeddings", "nmi": r2,
                                "runs": 3}],
                "environment": {"date": date, "git_commit": "abc", "cpu": cpu, "cpu_count": 2}}

    main = merge_quality(result(["crime"], 0.70, "AMD EPYC", "float32", "2026-12-01T10:00"),
                         result(["income"], 0.60, "Intel Xeon", "bfloat16", "2026-12-01T12:00"))
    text = "\n".join(quality_section(main))
    assert "**crime**: full mode" in text and "on AMD EPYC x 2, language model in float32" in text
    assert "on Intel Xeon x 2, language model in bfloat16" in text

    check = {**result(["crime"], 0.69, "Intel Xeon", "bfloat16", "2026-12-02T22:00"),
             "file": "quality-check-amx.json"}
    lines = quality_checks_section(main, [check])
    row = next(line for line in lines if line.startswith("| crime | engine default"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["0.720 ± 0.010", "0.710 ± 0.010", "-0.010"]
    assert "float32" in cells[5]  # where the main table's crime rows come from
    assert any("quality-check-amx.json" in line and "bfloat16" in line for line in lines)
    assert any(line.startswith("| land use | NMI") and "+0.090" in line for line in lines)  # the latest run's
    assert quality_checks_section(main, []) == []


def _prompt_run(date, features, dtype, reuse, cold):
    return {"model": "smollm2", "kind": "causal", "hidden_size": 576, "dtype": dtype,
            "load_seconds": 1.0, "prompt_characters": 1800, "regions": 32,
            "mean_text_characters": 180.0, "reuse": {"seconds": 1.0, "regions_per_second": reuse},
            "no_reuse": {"skipped": "not timed"},
            "cold_cache": {"seconds": 1.0, "regions_per_second": cold},
            "warm_cache": {"seconds": 0.01, "regions_per_second": 3000.0, "identical": True},
            "environment": {"date": date, "cpu": "AMD EPYC", "cpu_count": 2,
                            "cpu_features": features, "load_average": [0.1, 0.1, 0.1]}}


def test_a_prompt_benchmark_on_another_cpu_keeps_the_earlier_cpus_figure_beside_it():
    from bench.report import prompts_section
    from bench.run import other_cpu_runs

    bf16 = _prompt_run("day 1", ["avx2", "avx512f", "avx512_bf16"], "bfloat16", 8.9, 10.6)
    avx2 = _prompt_run("day 2", ["avx2"], "float32", 3.5, 3.6)
    avx2["other_cpus"] = other_cpu_runs(bf16, avx2)
    assert [run["date"] for run in avx2["other_cpus"]] == ["day 1"]
    text = "\n".join(prompts_section(avx2))
    assert "| day 1 | AMD EPYC x 2 | avx2, avx512f, avx512_bf16 | bfloat16 | - | 8.90 | 10.60 |" \
        in text
    assert "| day 2 (this run) | AMD EPYC x 2 | avx2 | float32 | - | 3.50 | 3.60 |" in text
    assert "weights in float32" in text

    # A later run on the first kind of CPU replaces it in the list, and keeps the other kind.
    again = _prompt_run("day 3", ["avx2", "avx512f", "avx512_bf16"], "bfloat16", 9.0, 10.8)
    assert [run["date"] for run in other_cpu_runs(avx2, again)] == ["day 2"]
    # The same kind of CPU as the run before it: nothing to keep.
    assert other_cpu_runs(bf16, again) == []


def test_the_demo_timing_is_a_goal_row_and_a_section_with_its_bar_beside_it():
    from bench.report import DEMO_BAR, DEMO_DEFAULT, render

    def demo(seconds: float) -> dict:
        return {"seconds": seconds, "through_qgis": True, "threads": "2",
                "environment": {"date": "now", "commit": "abc", "cpu": "AMD EPYC", "cpu_count": 2},
                "timings": {"srel_seconds": 80.0, "prompt_seconds": 200.0, "fit_seconds": 9.0},
                "r2": {"crime": {DEMO_DEFAULT: {"R2": 0.7641}, DEMO_BAR: {"R2": 0.7682}}},
                "clustering": {"landuse_class": {"NMI": 0.71, "ARI": 0.46}}}

    fast = render({"mode": "full", "demo": demo(291.4)}, None, None)
    assert "| `make demo` under 5 min after set-up, this CPU | 291 s on AMD EPYC x 2 (through QGIS" in fast
    assert "**met** (-9 s)" in fast
    assert "| crime | 0.764 | 0.768 |" in fast and "NMI 0.710" in fast
    assert "KMeans (k = the classes present) on the embeddings" in fast
    at_twelve = demo(120.0)
    at_twelve["clustering"]["landuse_class"]["CLUSTERS"] = 12
    assert "KMeans(12) on the embeddings" in render({"mode": "full", "demo": at_twelve}, None, None)
    slow = render({"mode": "full", "demo": demo(328.0)}, None, None)
    assert "**not met** (+28 s)" in slow
    skipped = render({"mode": "full", "demo": {"skipped": "QGIS's Python is not installed"}},
                     None, None)
    assert "Skipped: QGIS's Python is not installed" in skipped
    assert "make demo` under 5 min" not in skipped  # no goal row without a measurement


def test_the_srel_goal_row_is_the_latest_timing_and_earlier_runs_stay_beside_it(tmp_path):
    from bench.report import goals_section, speed_section
    from bench.run import run_srel_timing, srel_history

    folder = tmp_path / "manhattan"
    folder.mkdir()
    _benchmark_folder(folder)
    first = run_srel_timing(folder, "cpu", 2, log=lambda m: None, epochs=3)
    assert [r["seed"] for r in first["runs"]] == [0, 1] and first["n_regions"] == 20
    assert all(r["epochs"] == 3 and r["seconds"] > 0 and r["cpu_seconds"] > 0
               for r in first["runs"])

    def at(date: str, seconds: list[float], cpu: str) -> dict:
        return {"data": str(folder), "n_regions": 20, "threads": 2,
                "environment": {"date": date, "cpu": cpu, "cpu_count": 2},
                "runs": [{"seed": i, "epochs": 2000, "seconds": t, "cpu_seconds": 2 * t,
                          "final_loss": 8.7} for i, t in enumerate(seconds)]}

    older = at("2026-12-02T08:00:00", [71.0, 69.5], "AMD EPYC")
    newer = at("2026-12-02T12:00:00", [58.2, 61.0], "Intel(R) Xeon(R) Processor")
    newer["history"] = srel_history(older, newer)
    assert [h["fastest_seconds"] for h in newer["history"]] == [69.5]
    quality = {"environment": {"date": "2026-12-02T10:00:00"}, "data": str(folder),
               "srel": {"srel": {"epochs": 2000, "seconds": [100.9], "cpu_seconds": [200.0],
                                 "threads": 2}}}
    results = {"srel": newer, "quality": quality}
    document = "\n".join(goals_section(results) + speed_section(results, None))
    assert "| 58.2 s wall on Intel(R) Xeon(R) Processor x 2 (fastest of 2, 2 threads; CPU time " \
           "116 s over 2 threads; srel-timing.json, 2026-12-02T12:00:00) | **met** (-1.8 s) |" \
        in document
    # The earlier run keeps the CPU it ran on: the reference machine's CPU has changed.
    assert "| 2026-12-02T08:00:00 | `None` | AMD EPYC x 2 | 69.5 |" in document
    # A quality run measured after the SREL part gives the goal row its own timing.
    quality["environment"]["date"] = "2026-12-02T13:00:00"
    document = "\n".join(goals_section(results))
    assert "100.9 s wall on CPU not recorded (fastest of 1" in document and "**not met** (+40.9 s)" in document


def test_the_sweep_section_names_each_later_run_once_with_the_sizes_it_gave():
    from bench.report import speed_section

    def row(n: int, source: str | None = None) -> dict:
        r = {"n_regions": n, "srel": {"path": "dense", "epochs": 20, "schedule_epochs": 2000,
                                      "seconds_per_epoch": 0.05, "seconds": 1.0},
             "encode": {"skipped": "not asked"}, "predict": {}, "process_seconds": 10.0,
             "peak_rss_bytes": 1e9}
        return {**r, "source": source} if source else r

    sweep = {"settings": {"srel_epochs": 20, "encode": "none", "encode_max": 0, "predict": False,
                          "sizes": [180, 1000, 2000]},
             "environment": {}, "rows": [row(180, "e2e.json (day 2)"),
                                         row(1000, "e2e.json (day 2)"), row(2000)]}
    text = "\n".join(speed_section({"sweep_cpu": sweep}, None))
    assert "N = 180, 1,000 from e2e.json (day 2)." in text
    assert text.count("e2e.json (day 2)") == 1
    assert "The base run: SREL epochs: 20" in text  # the settings line is the base run's
    sweep["rows"] = [row(180), row(1000)]
    text = "\n".join(speed_section({"sweep_cpu": sweep}, None))
    assert "other runs" not in text and "\nSREL epochs: 20" in text


def test_benchmark_tasks_may_be_named_as_the_literature_names_them():
    """`make bench TASKS=crime,checkIn`: the literature's names, the folder's file stems and the
    dataset's own names all pick the same targets; a name that matches none is reported."""
    from bench.quality import resolve_tasks

    targets = {"crime": None, "check_in": None, "service_call": None}
    assert resolve_tasks(["crime", "checkIn", "serviceCall"], targets) == (
        ["crime", "check_in", "service_call"], [])
    assert resolve_tasks(["check", "CHECK_IN", "check_in", "income"], targets) == (
        ["check_in"], ["income"])


def test_srel_epoch_selection_on_the_labels_is_reported_as_optimistic(tmp_path):
    from bench.report import render
    from bench.srel_epochs import epoch_plot, run_srel_epochs

    data = tmp_path / "city"
    data.mkdir()
    _benchmark_folder(data, n=24)
    result = run_srel_epochs(data, seeds=(0, 1), every=2, tasks=("crime", "check_in"), folds=3,
                             epochs=6, log=lambda message: None)
    run = result["per_seed"][0]
    assert run["snapshot_epochs"] == [2, 4, 6] and run["epochs"] == 6
    for task in ("crime", "check_in"):
        curve = run["r2_by_epoch"][task]
        rows = run["tasks"][task]
        assert rows["clean"]["r2"] == pytest.approx(curve[-1], abs=1e-5)  # the schedule's end
        assert rows["per_task"]["r2"] == pytest.approx(max(curve), abs=1e-5)
        assert rows["per_task"]["r2"] >= rows["one_epoch"]["r2"] - 1e-9
        assert rows["one_epoch"]["r2"] == pytest.approx(
            curve[run["snapshot_epochs"].index(run["shared_epoch"])], abs=1e-5)
        assert len(result["summary"][task]["per_task"]["epochs"]) == 2
        tuned = run["ridgecv_r2_by_epoch"][task]
        assert rows["ridgecv_clean"]["r2"] == pytest.approx(tuned[-1], abs=1e-5)
        assert rows["ridgecv_per_task"]["r2"] == pytest.approx(max(tuned), abs=1e-5)
    assert epoch_plot(result, tmp_path / "epochs.png").stat().st_size > 1000

    result["environment"] = {"date": "now", "commit": "abc"}
    text = render({"mode": "quick", "srel_epochs": result,
                   "srel_epochs_plot": "bench/srel-epochs.png"}, tmp_path, None)
    assert "SREL's epoch chosen on the evaluation labels (HAFusion's practice): OPTIMISTIC" in text
    clean = result["summary"]["crime"]["clean"]
    assert f"| crime | {clean['r2']:.3f} ± {clean['r2_std']:.3f} |" in text
    assert "![R² against SREL's epoch](bench/srel-epochs.png)" in text


def test_another_citys_folder_gets_its_own_output_folder_and_only_the_parts_that_read_it(
        tmp_path):
    from bench.quality import MANHATTAN
    from bench.run import REPO, default_parts, output_folder

    chicago = tmp_path / "data_Chi"
    assert output_folder(chicago, None) == REPO / "out" / "bench" / "data_Chi"
    assert output_folder(chicago, str(tmp_path / "x")) == tmp_path / "x"
    assert output_folder(MANHATTAN, None) == REPO / "docs"
    assert default_parts(False, chicago) == ["quality", "versus", "epochs", "srel", "prompts"]
    assert default_parts(False, MANHATTAN) == ["quality", "versus", "real", "flags", "epochs",
                                               "srel", "sweep", "prompts"]
    assert default_parts(True, MANHATTAN)[-2:] == ["writeback", "demo"]
