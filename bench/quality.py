"""Quality on a benchmark folder (Manhattan by default): regression and land-use clustering.

Every row is a pooled K-fold evaluation (`engine.training.cv.cross_val_predict_pooled`) of one
model on one task, repeated over seeds where a seed changes anything (SREL's weights, the
Prompt4RE fit, the boosting), and summarised as mean ± std. Rows:

- raw features -> Ridge(alpha=1) (the literature's baseline), RidgeCV on raw and on robust
  (log) features and log targets, gradient boosting tuned inside the training folds
  (`engine.training.baselines`);
- SREL embeddings -> Ridge(alpha=1) (the literature's protocol for embeddings);
- the engine's default per-task model (`engine.training.predictor`), with and without the
  Prompt4RE candidate, and Prompt4RE alone (ToPT's stage 2 as released, clean selection);
- ablations: SREL without the distance bias, without centrality, no prompt (a constant
  semantic vector), and each language model;
- the paper protocol (choices on the test fold), labelled OPTIMISTIC, for the same models.

Land-use clustering: KMeans(k = classes present) on each embedding, NMI and ARI
(`engine.training.metrics.clustering_metrics`), and beside it at the published figures' k when
one is given (`literature_clusters`; Manhattan's published NMI / ARI use KMeans(12)).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.data.benchmark import resolve_targets as resolve_tasks  # noqa: F401 (bench's name)

Log = Callable[[str], None]

MANHATTAN_LITERATURE_CLUSTERS = 12  # ../shared/data/manhattan/README.md: KMeans(12)
# the bundled demo city: shared/ beside the checkout (as the tests and the CI clone have it)
MANHATTAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "manhattan"
LITERATURE_TASKS = ("crime", "check_in", "service_call", "carbon", "income")
SREL_VARIANTS = {  # name -> SRELConfig overrides
    "srel": {},
    "srel_no_distance": {"use_distance_bias": False},
    "srel_no_centrality": {"use_centrality": False},
}


@dataclass
class QualitySettings:
    """What the quality benchmark runs."""

    seeds: tuple[int, ...] = (0, 1, 2)  # SREL / Prompt4RE / boosting seeds; mean ± std over them
    tasks: tuple[str, ...] | None = None  # targets to evaluate (None: the literature's five)
    folds: int = 10  # outer folds (Manhattan: 10, no shuffle, as the literature)
    shuffle: bool = False  # shuffle before folding (seed 2024 when True)
    city: str | None = None  # the benchmark city (None: from the folder's name); its zeros rule
    srel_epochs: int | None = None  # SREL epochs (None: the engine's schedule, 2000 at N=180)
    language_model: str = "smollm2"  # the default prompt encoder
    ablation_models: tuple[str, ...] = ("minilm",)  # other language models to compare
    ablations: bool = True  # run the prompt and language-model ablations
    srel_ablations: bool = True  # train SREL without distance bias / without centrality too
    method_all_tasks: bool = True  # engine-default rows on every task (False: ablation tasks)
    ablation_tasks: tuple[str, ...] | None = None  # tasks for ablations and paper (None: all)
    paper_protocol: bool = True  # also run the OPTIMISTIC paper protocol
    gbm: bool = True  # include gradient boosting (slower)
    gbm_all_tasks: bool = True  # boosting on every task (False: on the ablation tasks only)
    device: str = "cpu"  # torch device
    cache_dir: str | None = None  # language models' and vectors' cache (None: engine default)
    predictor_options: dict = field(default_factory=dict)  # PredictorConfig fields for the default
    prompt4re_epochs: int = 3000  # Prompt4RE-alone rows: epoch ceiling (released: 3000)
    prompt4re_rows: bool = True  # run Prompt4RE alone and the default + Prompt4RE candidate
    # KMeans k of the published clustering figures, reported beside k = the classes present
    # (None: only the latter). Manhattan's published NMI / ARI use KMeans(12) on 13 classes.
    literature_clusters: int | None = None


def _summary(runs: list[dict]) -> dict:
    """mean and std (over seeds) of each metric; std is None for a single run."""
    out = {}
    for key in ("mae", "rmse", "r2", "nmi", "ari"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = float(np.mean(values))
            out[f"{key}_std"] = float(np.std(values)) if len(values) > 1 else None
    out["runs"] = len(runs)
    return out


def pooled_prediction(fit_predict, inputs, y, *, folds: int, shuffle: bool,
                      protocol: str = "clean"):
    """Pooled K-fold predictions (`cross_val_predict_pooled`, the literature's shuffling seed).
    BLAS and OpenMP run on one thread here: these fits are small, and on a shared machine more
    threads spin-wait (boosting ran 7x slower with 2 threads)."""
    from threadpoolctl import threadpool_limits

    from engine.training.cv import cross_val_predict_pooled

    with threadpool_limits(limits=1):
        return cross_val_predict_pooled(fit_predict, inputs, y, folds=folds, shuffle=shuffle,
                                        protocol=protocol)


def _pooled(fit_predict, inputs, y, settings: QualitySettings, protocol: str) -> dict:
    """Pooled K-fold metrics of `pooled_prediction` on the settings' folds."""
    return dict(pooled_prediction(fit_predict, inputs, y, folds=settings.folds,
                                  shuffle=settings.shuffle, protocol=protocol).metrics)


# ---------------------------------------------------------------------------------------------
# The engine's default per-task model, behind one adapter


def method_fit_predict(embeddings: np.ndarray, semantic: np.ndarray | None,
                       features: dict[str, np.ndarray], *, seed: int, device: str,
                       options: dict):
    """A `fit_predict` for cross_val_predict_pooled: the engine's default per-task model
    (`engine.training.predictor`: candidates on SREL embeddings, raw features and prompt
    vectors, blended by an inner K-fold of the training fold; the test fold in the paper
    protocol)."""
    from engine.training.predictor import make_fit_predict

    return make_fit_predict(embeddings, semantic, features, seed=seed, device=device, **options)


def prompt4re_fit_predict(embeddings: np.ndarray, semantic: np.ndarray, *, seed: int,
                          device: str, epochs: int, lr: float, head_alpha: float | str = "loo"):
    """Prompt4RE alone (ToPT's stage 2), for cross_val_predict_pooled: its epoch chosen by an
    inner validation split (clean) or by the test fold every 20 epochs (paper, as released);
    its head starts from a Ridge with the penalty `head_alpha` ("loo": chosen by leave-one-out
    on the training fold, the engine's default; 1.0: the authors' release)."""
    from engine.training.train_prompt4re import fit_prompt4re

    def fit_predict(inputs, y, train_index, predict_index, *, selection_index=None):
        select_on = None
        if selection_index is not None:
            select_on = (selection_index, y[selection_index])
        fitted = fit_prompt4re(embeddings, semantic, y, train_index, epochs=epochs, lr=lr,
                               device=device, seed=seed, select_on=select_on,
                               head_alpha=head_alpha)
        return fitted.predict(predict_index), {"epoch": fitted.chosen_epoch}

    return fit_predict


RELEASED_LR = {"check_in": 3e-4}  # the released learning rates; 1e-4 for the other tasks


# ---------------------------------------------------------------------------------------------
# The benchmark


def run_quality(data: str | Path = MANHATTAN, settings: QualitySettings | None = None,
                log: Log = print) -> dict:
    """Every quality row on the benchmark folder `data`; a JSON-able dict."""
    import torch

    from engine.data.benchmark import load_benchmark_folder
    from engine.language.encode import encode_regions
    from engine.language.models import default_dtype
    from engine.models.modeling_srel import SRELConfig
    from engine.training.baselines import gbm_fit_predict, ridge_cv_fit_predict, ridge_fit_predict
    from engine.training.features import literature_features, robust_features
    from engine.training.metrics import clustering_metrics
    from engine.training.train_srel import fit_srel

    settings = settings or QualitySettings()
    dataset = load_benchmark_folder(data, city=settings.city)
    wanted = settings.tasks or LITERATURE_TASKS
    tasks, missing = resolve_tasks(wanted, dataset.targets)
    if not tasks:
        from engine.errors import InputError

        raise InputError(f"none of the tasks {', '.join(wanted)} is in the benchmark folder",
                         layer=str(data), hint=f"Available: {', '.join(sorted(dataset.targets))}.")
    ablation_tasks = [t for t in resolve_tasks(settings.ablation_tasks or tasks,
                                               dataset.targets)[0] if t in tasks]
    protocols = ["clean"] + (["paper"] if settings.paper_protocol else [])
    literature = literature_features(dataset)
    robust = robust_features(dataset)
    feature_sets = {"raw": literature, "robust": robust}  # what the engine's predictor reads
    out: dict = {"data": str(data), "regions": dataset.n_regions, "tasks": tasks,
                 "split": dataset.source.get("split"),
                 "missing_tasks": missing, "settings": asdict(settings),
                 "labelled": {t: int(np.isfinite(dataset.targets[t]).sum()) for t in tasks},
                 "rows": [], "clustering": [], "srel": {},
                 # the language models' weights dtype (the prompt vectors differ slightly by it)
                 "language_model_dtype": str(default_dtype(settings.device)).replace("torch.", "")}

    def add(task: str, protocol: str, name: str, label: str, runs: list[dict],
            seconds: float) -> None:
        row = {"task": task, "protocol": protocol, "model": name, "label": label,
               "optimistic": protocol == "paper", "seconds": seconds, **_summary(runs),
               "per_seed": runs}
        out["rows"].append(row)
        log(f"  {task:<13} {protocol:<6} {label:<52} R2 {row['r2']:.3f}")

    # 1. Baselines on raw features (no embedding involved).
    baselines = [
        ("raw_ridge1", "raw features -> Ridge(alpha=1) (literature)",
         lambda seed: ridge_fit_predict(1.0), literature, False),
        ("raw_ridgecv", "raw features -> RidgeCV (LOO in training folds)",
         lambda seed: ridge_cv_fit_predict(), literature, False),
        ("log_ridgecv", "log features -> RidgeCV",
         lambda seed: ridge_cv_fit_predict(), robust, False),
        ("log_ridgecv_logy", "log features -> RidgeCV on log1p(target)",
         lambda seed: ridge_cv_fit_predict(target="log1p"), robust, False),
    ]
    if settings.gbm:
        baselines.append(("gbm", "log features -> gradient boosting (tuned in training folds)",
                          lambda seed: gbm_fit_predict(seed=seed), robust, True))
    for task in tasks:
        y = dataset.targets[task]
        for protocol in protocols:
            for name, label, make, features, seeded in baselines:
                if protocol == "paper" and name == "raw_ridge1":
                    continue  # nothing is chosen: identical to the clean protocol
                if protocol == "paper" and task not in ablation_tasks:
                    continue
                if name == "gbm" and task not in ablation_tasks and not settings.gbm_all_tasks:
                    continue
                start = time.perf_counter()
                seeds = settings.seeds if seeded else settings.seeds[:1]
                runs = [_pooled(make(seed), features, y, settings, protocol) for seed in seeds]
                add(task, protocol, name, label, runs, time.perf_counter() - start)

    # 2. SREL embeddings (no label read), per variant and seed.
    variants = ["srel"] + (["srel_no_distance", "srel_no_centrality"]
                           if settings.ablations and settings.srel_ablations else [])
    embeddings: dict[str, dict[int, np.ndarray]] = {}
    for variant in variants:
        embeddings[variant] = {}
        seconds, cpu_seconds = [], []  # wall time; CPU time of this process (all its threads)
        for seed in settings.seeds:
            config = SRELConfig(epochs=settings.srel_epochs, **SREL_VARIANTS[variant])
            torch.manual_seed(seed)
            log(f"  SREL {variant} seed {seed} ...")
            cpu_start = time.process_time()
            result = fit_srel(dataset, config, device=settings.device, seed=seed)
            cpu_seconds.append(time.process_time() - cpu_start)
            embeddings[variant][seed] = result.embeddings
            seconds.append(result.seconds)
            log(f"  SREL {variant} seed {seed}: {result.epochs} epochs in {result.seconds:.1f} s")
        out["srel"][variant] = {"epochs": result.epochs, "seconds": seconds,
                                "cpu_seconds": cpu_seconds,
                                "threads": torch.get_num_threads(), "device": settings.device}

    # 3. Land-use clustering of each embedding (and of the raw features, for reference).
    class_name = next(iter(dataset.classes), None)
    if class_name is not None:
        classes = dataset.classes[class_name]
        k = settings.literature_clusters
        named = [("raw_features", "raw features (z-scored)", {s: literature for s in settings.seeds})]
        named += [(variant, f"{variant} embeddings", embeddings[variant]) for variant in variants]
        for model, label, vectors in named:
            runs = [clustering_metrics(vectors[s], classes, seed=s) for s in settings.seeds]
            row = {"model": model, "label": label, "clusters": runs[0]["clusters"],
                   **_summary(runs)}
            if k is not None:
                row["literature_k"] = k
                row["at_literature_k"] = _summary(
                    [clustering_metrics(vectors[s], classes, seed=s, n_clusters=k)
                     for s in settings.seeds])
            out["clustering"].append(row)

    # 4. SREL -> Ridge(1), the literature's protocol for embeddings.
    for task in tasks:
        y = dataset.targets[task]
        for variant in variants:
            if variant != "srel" and task not in ablation_tasks:
                continue
            start = time.perf_counter()
            runs = [_pooled(ridge_fit_predict(1.0), embeddings[variant][s], y, settings, "clean")
                    for s in settings.seeds]
            add(task, "clean", f"{variant}_ridge1", f"{variant} embeddings -> Ridge(alpha=1)",
                runs, time.perf_counter() - start)

    # 5. The engine's default model and its ablations.
    models = [settings.language_model]
    if settings.ablations:
        models += [m for m in settings.ablation_models if m != settings.language_model]
    for task in tasks:
        if task not in ablation_tasks and not settings.method_all_tasks:
            continue
        y = dataset.targets[task]
        semantic: dict[str, np.ndarray | None] = {}
        for model in models if task in ablation_tasks else models[:1]:
            start = time.perf_counter()
            semantic[model] = encode_regions(dataset, task, model=model,
                                             cache_dir=settings.cache_dir, device=settings.device)
            log(f"  prompts {task} {model}: {time.perf_counter() - start:.1f} s")
        main = semantic[settings.language_model]  # None when the language model is "none"
        lm = settings.language_model
        default = "engine default: SREL + raw features + prompt vectors, blended in training folds"
        combos = [("clean", "srel", main, "method", f"{default} ({lm})", {})]
        if task in ablation_tasks:
            if settings.paper_protocol:
                combos.append(("paper", "srel", main, "method", f"{default} ({lm})", {}))
            if settings.prompt4re_rows and main is not None:
                combos.append(("clean", "srel", main, "method_prompt4re",
                               "engine default + Prompt4RE candidate", {"prompt4re": True}))
            if settings.ablations:
                if main is not None:
                    combos.append(("clean", "srel", np.ones_like(main), "method_no_prompt",
                                   "  ablation: no prompt (constant semantic vector)", {}))
                for model in models[1:]:
                    combos.append(("clean", "srel", semantic[model], f"method_{model}",
                                   f"  ablation: language model {model}", {}))
                if "srel_no_distance" in embeddings:
                    combos.append(("clean", "srel_no_distance", main, "method_no_distance",
                                   "  ablation: SREL without distance bias", {}))
                    combos.append(("clean", "srel_no_centrality", main, "method_no_centrality",
                                   "  ablation: SREL without centrality", {}))
        for protocol, variant, vectors, name, label, extra in combos:
            start = time.perf_counter()
            runs = []
            for seed in settings.seeds:
                fit_predict = method_fit_predict(embeddings[variant][seed], vectors, feature_sets,
                                                 seed=seed, device=settings.device,
                                                 options={**settings.predictor_options, **extra})
                runs.append(_pooled(fit_predict, None, y, settings, protocol))
            add(task, protocol, name, label, runs, time.perf_counter() - start)
        # Prompt4RE alone (ToPT's stage 2 on our SREL). Clean: the engine's head start (a Ridge
        # with its penalty chosen in the training fold) and the release's (Ridge(1)). Paper:
        # the release as it is (Ridge(1), test-fold selection), for the published comparison.
        if settings.prompt4re_rows and main is not None and task in ablation_tasks:
            heads = {"clean": (("prompt4re", "loo", "head from RidgeCV"),
                               ("prompt4re_released", 1.0, "head from Ridge(1) as released")),
                     "paper": (("prompt4re_released", 1.0, "head from Ridge(1) as released"),)}
            for protocol in protocols:
                for name, head_alpha, how in heads[protocol]:
                    start = time.perf_counter()
                    runs = [_pooled(prompt4re_fit_predict(
                                embeddings["srel"][seed], main, seed=seed, device=settings.device,
                                epochs=settings.prompt4re_epochs, lr=RELEASED_LR.get(task, 1e-4),
                                head_alpha=head_alpha),
                            None, y, settings, protocol) for seed in settings.seeds]
                    add(task, protocol, name, f"SREL + Prompt4RE alone ({lm}, {how}, up to "
                        f"{settings.prompt4re_epochs} epochs)", runs, time.perf_counter() - start)
    return out
