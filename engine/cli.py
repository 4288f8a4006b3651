"""The engine's command line: prepare, embed, train, predict, evaluate, check.

Every command turns its options into one job dict (the same keys as a `--job` file, which is what
the plugin writes), runs it, and reports through an EventSink. Bad input ends with an `error`
event of kind "input" and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path

from engine import __version__
from engine.errors import InputError
from engine.events import EventSink

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_MEMORY, EXIT_CANCELLED = 0, 1, 2, 3, 130
COMMANDS = ("prepare", "embed", "train", "predict", "evaluate", "check")


class Cancelled(Exception):
    """The run was asked to stop (SIGTERM or SIGINT)."""


class MemoryRefused(Exception):
    """The job would need more memory than the machine has; refused before it starts."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="ToPT engine: task-oriented urban region embeddings (SREL + Prompt4RE) "
        "and indicator prediction from GIS layers.",
    )
    parser.add_argument("--version", action="version", version=f"topt-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "prepare": "build the region dataset from layers and print its summary",
        "embed": "train SREL (self-supervised) and write region embeddings",
        "train": "SREL + Prompt4RE per target: k-fold evaluation, predictions, model, report",
        "predict": "apply a trained model (--model) to the regions",
        "evaluate": "k-fold metrics of the method and the baselines",
        "check": "report Python, versions, device and whether the default language model is there",
    }
    for name in COMMANDS:
        cmd = sub.add_parser(name, help=helps[name], description=helps[name])
        _add_common(cmd, needs_data=name != "check")
    return parser


def _add_common(cmd: argparse.ArgumentParser, needs_data: bool) -> None:
    cmd.add_argument("--events", choices=("text", "jsonl", "quiet"), default="text",
                     help="jsonl: one JSON event per line on stdout (for the QGIS plugin)")
    cmd.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    if not needs_data:
        cmd.add_argument("--language-model", default="smollm2")
        return
    data = cmd.add_argument_group("data (a SOURCE is PATH or PATH|layername=NAME, then |key=value)")
    data.add_argument("--job", type=Path, help="a JSON job file with every option below")
    data.add_argument("--regions", help="polygon layer of regions")
    data.add_argument("--id-field", help="region id field (default: feature order)")
    data.add_argument("--name-field", help="a name or address per region")
    data.add_argument("--fields", help="numeric fields of the region layer used as a view, A,B")
    data.add_argument("--points", action="append", default=[],
                      help="SOURCE[|category=F][|view=NAME]: points counted per category")
    data.add_argument("--landuse", action="append", default=[],
                      help="SOURCE|class=F: polygons -> area shares, points -> counts")
    data.add_argument("--trips", action="append", default=[],
                      help="SOURCE|origin=F|destination=F[|weight=F], or a line layer SOURCE")
    data.add_argument("--raster", action="append", default=[],
                      help="PATH[|stats=mean,sum,std]: zonal statistics per band")
    data.add_argument("--targets", help="numeric target fields, A,B")
    data.add_argument("--target-weight", action="append", default=[],
                      help="TARGET=FIELD: the numeric field of TARGET's region weights, e.g. "
                      "crime_rate=population (weighted fit and metrics; repeatable)")
    data.add_argument("--classes", help="class field(s) for land-use clustering (NMI/ARI)")
    data.add_argument("--clusters", type=int, default=None,
                      help="KMeans k for --classes (default: the number of classes present; "
                      "the Manhattan literature uses 12)")
    data.add_argument("--benchmark", help="a folder in the literature's layout (poi_dist.npy...)")
    data.add_argument("--city", default=None,
                      help="with --benchmark: manhattan, chicago, san_francisco or other, whose "
                      "literature split (folds, shuffling, check-in zeros) the evaluation uses "
                      "unless --folds/--shuffle say otherwise (default: from the folder's name)")
    run = cmd.add_argument_group("run")
    run.add_argument("--out-dir", type=Path, help="where outputs are written (required)")
    run.add_argument("--model", type=Path, help="a trained model folder (predict)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--embedding-size", type=int, default=None)
    run.add_argument("--epochs", type=int, default=None, help="SREL epochs (default: schedule)")
    run.add_argument("--folds", type=int, default=None)
    run.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None)
    run.add_argument("--fold-seed", type=int, default=None,
                     help="the shuffled folds' seed (default: --seed; a benchmark city's own)")
    run.add_argument("--protocol", choices=("clean", "paper"), default=None,
                     help="clean (default): no test-fold label influences any choice; "
                     "paper: the authors' test-fold selection, reported as optimistic")
    run.add_argument("--language-model", default=None,
                     help="smollm2 (default), minilm, none, or a Hugging Face id or path")
    run.add_argument("--image-raster", help="raster layer cropped per region for multimodal models")
    run.add_argument("--task-description", action="append", default=[],
                     help="TARGET=TEXT, what the target means (repeatable)")
    run.add_argument("--prompt4re", action="store_true",
                     help="add the trained Prompt4RE cross-attention head as a candidate of the "
                     "per-task model (kept only where inner validation says it helps; slower)")
    run.add_argument("--no-auto-weight", action="store_true",
                     help="fit a target without --target-weight unweighted even when its errors "
                     "shrink as a numeric region field grows (by default it is then weighted by "
                     "that field, and the log says so)")
    run.add_argument("--interval-level", type=float, default=None,
                     help="the level of each prediction's interval, fields lo_<target> and "
                     "hi_<target> (default 0.9: about 9 in 10 regions inside; 0: no intervals)")
    run.add_argument("--cache-dir", type=Path, default=None)
    run.add_argument("--overwrite", action="store_true", help="replace existing outputs")


SWITCHES = ("overwrite", "prompt4re")  # store_true flags: False means "not given"


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _per_target(items: list[str], option: str, value: str) -> dict[str, str]:
    """Repeated `option TARGET=VALUE` items -> {target: value}, both stripped."""
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"{option} needs TARGET={value}, got {item!r}")
        target, text = item.split("=", 1)
        out[target.strip()] = text.strip()
    return out


def job_from_args(args: argparse.Namespace) -> dict:
    """One job dict from a `--job` file and the command-line options (options win)."""
    from engine.data.build import parse_source

    job: dict = {}
    if getattr(args, "job", None):
        try:
            job = json.loads(Path(args.job).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the job file: {exc}", layer=str(args.job)) from exc
        if not isinstance(job, dict):
            raise InputError("the job file must hold one JSON object", layer=str(args.job))
    if args.regions:
        path, layer, _ = parse_source(args.regions)
        job["regions"] = {**job.get("regions", {}), "path": path, "layer": layer}
    regions = job.setdefault("regions", {}) if (args.regions or "regions" in job) else None
    if regions is not None:
        for key in ("id_field", "name_field"):
            if getattr(args, key):
                regions[key] = getattr(args, key)
        if args.fields:
            regions["fields"] = _split_list(args.fields)
    for source in args.points:
        path, layer, opts = parse_source(source)
        job.setdefault("points", []).append({"path": path, "layer": layer,
                                             "category_field": opts.get("category"),
                                             "view": opts.get("view", "poi")})
    for source in args.landuse:
        path, layer, opts = parse_source(source)
        job.setdefault("landuse", []).append({"path": path, "layer": layer,
                                              "class_field": opts.get("class")})
    for source in args.trips:
        path, layer, opts = parse_source(source)
        job.setdefault("trips", []).append({
            "path": path, "layer": layer, "origin_field": opts.get("origin"),
            "destination_field": opts.get("destination"), "weight_field": opts.get("weight")})
    for source in args.raster:
        path, _, opts = parse_source(source)
        job.setdefault("rasters", []).append(
            {"path": path, "stats": _split_list(opts.get("stats")) or ["mean", "sum", "std"]})
    if args.targets:
        job["targets"] = _split_list(args.targets)
    if args.classes:
        job["classes"] = _split_list(args.classes)
    if args.benchmark:
        job["benchmark"] = args.benchmark
    job.setdefault("target_weights", {}).update(
        _per_target(args.target_weight, "--target-weight", "FIELD"))
    job.setdefault("task_descriptions", {}).update(
        _per_target(args.task_description, "--task-description", "TEXT"))
    for key in ("out_dir", "model", "seed", "embedding_size", "epochs", "folds", "clusters",
                "shuffle", "fold_seed", "city", "protocol", "language_model", "image_raster",
                "cache_dir", "device", "overwrite", "prompt4re", "interval_level"):
        value = getattr(args, key, None)
        # None: not given. False is "not given" only for the on/off flags; --no-shuffle and
        # --seed 0 are choices (`value not in (None, False)` dropped both: 0 == False).
        if value is None or (value is False and key in SWITCHES):
            continue
        job[key] = str(value) if isinstance(value, Path) else value
    if getattr(args, "no_auto_weight", False):
        job.setdefault("predictor", {})["auto_weight"] = False
    if isinstance(job.get("image_raster"), str):
        job["image_raster"] = {"path": job["image_raster"]}
    return job


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sink = EventSink(args.events)

    def _stop(signum, frame):  # noqa: ARG001
        raise Cancelled()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        from engine import pipeline

        if args.command == "check":
            return pipeline.run_check(args, sink)
        job = job_from_args(args)
        return pipeline.run(args.command, job, sink)
    except InputError as exc:
        sink.error("input", exc.describe(), layer=exc.layer, field=exc.field, hint=exc.hint)
        return EXIT_INPUT
    except MemoryRefused as exc:
        sink.error("memory", str(exc), hint="Use fewer regions, a smaller embedding size, "
                   "or a machine with more memory.")
        return EXIT_MEMORY
    except (Cancelled, KeyboardInterrupt):
        sink.error("cancelled", "the run was cancelled; nothing was written")
        return EXIT_CANCELLED
    except MemoryError:
        sink.error("memory", "the machine ran out of memory during the run; nothing was written",
                   hint="Use fewer regions or a smaller embedding size.")
        return EXIT_MEMORY
    except Exception as exc:  # the last line of defence: a message, never a bare traceback
        sink.error("internal", f"internal error: {type(exc).__name__}: {exc}.",
                   hint="Please report this, with the log.")
        traceback.print_exc(file=sys.stderr)
        return EXIT_INTERNAL
