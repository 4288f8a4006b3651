"""The engine's default per-task model: candidates over several inputs, blended by inner CV.

For one target, a set of candidate predictors is built from what the task has:

- Ridge (penalty by exact leave-one-out) on the SREL embeddings, on the raw feature matrices,
  on the language semantic vectors, and on [embeddings, raw features] side by side;
- each on the raw target and on log1p(target) (counts only);
- optionally Prompt4RE (embeddings + semantic vectors, `fit_prompt4re`, its epoch chosen by its
  own inner validation split) and a gradient-boosting model.

Clean protocol (default): inside the training regions alone, an inner K-fold gives every
candidate out-of-fold predictions; the blend weights are the non-negative weights summing to 1
that minimise the squared error of those predictions (stacking, Breiman 1996). Each candidate
with a weight is then refitted on all training regions. No label outside `train_index` is read.

Paper protocol: the candidates are fitted on the training regions and the weights are fitted on
the test fold's labels (`selection_index`): OPTIMISTIC, for reproducing published practice only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from engine.errors import InputError
from engine.training.baselines import (
    DEFAULT_ALPHAS,
    LeaveOneOutRidge,
    forward_target,
    inverse_target,
)
from engine.training.cv import (
    LITERATURE_SEED,
    PROTOCOL_LABELS,
    PooledPrediction,
    check_protocol,
    cross_val_predict_pooled,
    kfold_splits,
)
from engine.training.features import zscore
from engine.training.metrics import regression_metrics

Predict = Callable[[np.ndarray], np.ndarray]  # region indices -> predictions in target units


@dataclass
class TaskInputs:
    """Everything the per-task model may read, row i = region i. No array but `y` holds labels."""

    embeddings: np.ndarray | None  # (N, d) SREL region embeddings
    semantic: np.ndarray | None  # (N, h) language-model semantic vectors for this task
    raw_features: np.ndarray | dict[str, np.ndarray] | None  # (N, F), or named (N, F_k) matrices
    y: np.ndarray  # (N,) target, NaN = unknown

    @property
    def n_regions(self) -> int:
        return int(np.asarray(self.y).shape[0])


@dataclass
class PredictorConfig:
    inner_folds: int = 5  # inner K-fold inside the training regions that scores the candidates
    inner_shuffle: bool = True  # shuffle the training regions before the inner folds (seeded)
    combine: str = "stack"  # "stack": convex weights on inner out-of-fold predictions; "best": one
    alphas: tuple[float, ...] = tuple(DEFAULT_ALPHAS)  # Ridge penalties tried by leave-one-out
    target_transforms: tuple[str, ...] = ("raw", "log1p")  # log1p only used when all y >= 0
    use_concat: bool = True  # a candidate on [embeddings, raw features] side by side
    use_semantic_ridge: bool = True  # a Ridge candidate on the semantic vectors alone
    prompt4re: bool = False  # Prompt4RE as a candidate (torch training per inner fold: slow)
    prompt4re_epochs: int = 300  # Prompt4RE's epoch ceiling (its inner split picks the epoch)
    prompt4re_lr: float = 3e-4  # Prompt4RE's Adam learning rate
    gbm: bool = False  # a gradient-boosting candidate (HistGradientBoosting, fixed settings)
    min_weight: float = 1e-3  # blend weights below this are dropped (and the rest renormalised)


# ---------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One way to predict the target: fit(train_index, y) -> predict(region indices)."""

    name: str
    fit: Callable[[np.ndarray, np.ndarray], Predict]
    info: dict[str, Any] = field(default_factory=dict)  # what the last fit chose (penalty...)


def _side_by_side(blocks: list[np.ndarray]) -> np.ndarray:
    """z-scored blocks side by side, each rescaled to the same total variance (so a wide block
    does not outweigh a narrow one) while the mean column variance stays 1."""
    total = sum(b.shape[1] for b in blocks)
    scaled = [b * np.sqrt(total / (len(blocks) * max(b.shape[1], 1))) for b in blocks]
    return np.concatenate(scaled, axis=1)  # (N, sum of widths)


@dataclass
class RidgePredict:
    """A fitted Ridge on one input block: predictions in the target's units. Saveable."""

    block: str  # the input block's name ("srel", "raw", "robust", "semantic", "srel+raw")
    transform: str  # "raw" or "log1p": the target the Ridge was fitted on
    coef: np.ndarray  # (F,)
    intercept: float
    alpha: float  # the penalty chosen by leave-one-out
    y_max: float  # the largest training label (caps log1p extrapolation)
    X: np.ndarray | None = field(default=None, repr=False)  # (N, F) the block, all regions

    def __call__(self, index: np.ndarray) -> np.ndarray:
        values = self.X[index] @ self.coef + self.intercept
        return inverse_target(values, self.transform, np.asarray([self.y_max]))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"coef": self.coef.astype(np.float64)},
                {"kind": "ridge", "block": self.block, "transform": self.transform,
                 "intercept": float(self.intercept), "alpha": float(self.alpha),
                 "y_max": float(self.y_max)})

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   blocks: dict[str, np.ndarray]) -> RidgePredict:
        X = blocks[meta["block"]]
        if X.shape[1] != arrays["coef"].shape[0]:
            raise InputError(
                f"the model expects {arrays['coef'].shape[0]} {meta['block']} inputs, these "
                f"regions give {X.shape[1]}",
                hint="Predict with the same layers, fields and language model as at training.")
        return cls(meta["block"], meta["transform"], arrays["coef"], meta["intercept"],
                   meta["alpha"], meta["y_max"], X)


def _ridge_candidate(name: str, X: np.ndarray, transform: str, alphas: np.ndarray) -> Candidate:
    block = name[len("ridge["):].split("|")[0]
    candidate = Candidate(name=name, fit=lambda train, y: None)  # fit set below

    def fit(train: np.ndarray, y: np.ndarray) -> Predict:
        y_train = y[train]
        model = LeaveOneOutRidge(alphas=alphas).fit(X[train], forward_target(y_train, transform))
        candidate.info = {"alpha": model.alpha_}
        return RidgePredict(block, transform, model.coef_, model.intercept_, model.alpha_,
                            float(np.max(y_train)), X)

    candidate.fit = fit
    return candidate


def _gbm_candidate(name: str, X: np.ndarray, transform: str, seed: int) -> Candidate:
    from sklearn.ensemble import HistGradientBoostingRegressor

    def fit(train: np.ndarray, y: np.ndarray) -> Predict:
        y_train = y[train]
        model = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=200,
                                              max_leaf_nodes=15, min_samples_leaf=5,
                                              random_state=seed)
        model.fit(X[train], forward_target(y_train, transform))
        return lambda index: inverse_target(model.predict(X[index]), transform, y_train)

    return Candidate(name=name, fit=fit)


@dataclass
class Prompt4REPredict:
    """A trained Prompt4RE model over all regions' embeddings and semantic vectors. Saveable."""

    model: Any  # engine.models.modeling_prompt4re.Prompt4RE, eval mode
    embeddings: np.ndarray = field(repr=False)  # (N, d)
    semantic: np.ndarray = field(repr=False)  # (N, h)
    device: str = "cpu"

    def __call__(self, index: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            region = torch.as_tensor(self.embeddings, dtype=torch.float32, device=self.device)
            semantic = torch.as_tensor(self.semantic, dtype=torch.float32, device=self.device)
            query = torch.as_tensor(np.asarray(index, dtype=np.int64), device=self.device)
            return self.model.predict(region, semantic, query).cpu().numpy().astype(np.float64)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        return arrays, {"kind": "prompt4re", "config": self.model.config.to_dict(),
                        "arguments": self.model.constructor_arguments()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   embeddings: np.ndarray, semantic: np.ndarray, device: str = "cpu"):
        import torch

        from engine.models.modeling_prompt4re import Prompt4RE, Prompt4REConfig

        model = Prompt4RE(Prompt4REConfig(**meta["config"]), **meta["arguments"])
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        return cls(model.to(device).eval(), embeddings, semantic, device)


def _prompt4re_candidate(name: str, inputs: TaskInputs, transform: str, config: PredictorConfig,
                         seed: int, device: str) -> Candidate:
    candidate = Candidate(name=name, fit=lambda train, y: None)

    def fit(train: np.ndarray, y: np.ndarray) -> Predict:
        from engine.training.train_prompt4re import fit_prompt4re

        visible = np.full_like(y, np.nan)
        visible[train] = y[train]  # fit_prompt4re reads y[train_index] only; belt and braces
        result = fit_prompt4re(inputs.embeddings, inputs.semantic, visible, train,
                               epochs=config.prompt4re_epochs, lr=config.prompt4re_lr,
                               device=device, seed=seed, validation_fraction=0.2,
                               target_transform="log1p" if transform == "log1p" else "none")
        candidate.info = {"epoch": result.chosen_epoch}
        return Prompt4REPredict(result.model, inputs.embeddings, inputs.semantic, device)

    candidate.fit = fit
    return candidate


def input_blocks(inputs: TaskInputs, config: PredictorConfig) -> dict[str, np.ndarray]:
    """The z-scored input matrices the candidates read, by name (no label is involved)."""
    blocks: dict[str, np.ndarray] = {}
    if inputs.embeddings is not None:
        blocks["srel"] = zscore(inputs.embeddings)
    raw = inputs.raw_features
    raw_named = ({"raw": raw} if isinstance(raw, np.ndarray) else dict(raw or {}))
    for key, matrix in raw_named.items():
        blocks[key] = zscore(matrix)
    if inputs.semantic is not None and config.use_semantic_ridge:
        blocks["semantic"] = zscore(inputs.semantic)
    if config.use_concat and "srel" in blocks and raw_named:
        first = next(iter(raw_named))
        blocks[f"srel+{first}"] = _side_by_side([blocks["srel"], blocks[first]])
    for name, matrix in blocks.items():
        if matrix.shape[0] != inputs.n_regions:
            raise InputError(f"the {name} matrix has {matrix.shape[0]} rows for "
                             f"{inputs.n_regions} regions", hint="Rebuild the task inputs.")
    if not blocks:
        raise InputError("the task has no inputs to predict from",
                         hint="Give region embeddings, raw features or semantic vectors.")
    return blocks


def build_candidates(inputs: TaskInputs, config: PredictorConfig, *, non_negative: bool,
                     seed: int = 0, device: str = "cpu") -> list[Candidate]:
    """The candidates this task's inputs allow (log1p ones only for targets >= 0)."""
    alphas = np.asarray(config.alphas, dtype=np.float64)
    blocks = input_blocks(inputs, config)
    raw = inputs.raw_features
    raw_named = ({"raw": raw} if isinstance(raw, np.ndarray) else dict(raw or {}))
    transforms = [t for t in config.target_transforms if t == "raw" or non_negative]
    candidates = [_ridge_candidate(f"ridge[{name}|{t}]", matrix, t, alphas)
                  for name, matrix in blocks.items() for t in transforms]
    if config.gbm:
        name = next((k for k in raw_named), "srel")
        candidates += [_gbm_candidate(f"gbm[{name}|{t}]", blocks[name], t, seed)
                       for t in transforms]
    if config.prompt4re and inputs.embeddings is not None and inputs.semantic is not None:
        candidates += [_prompt4re_candidate(f"prompt4re[{t}]", inputs, t, config, seed, device)
                       for t in transforms]
    return candidates


# ---------------------------------------------------------------- blending
def convex_weights(predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 minimising ||predictions @ w - y||^2.

    predictions: (n, C). Solved as NNLS with an extra, heavily weighted row sum(w) = 1.
    """
    scale = float(np.abs(predictions).max()) or 1.0
    P, target = predictions / scale, y / scale  # (n, C), (n,) in comparable units
    penalty = 1e3 * np.sqrt(len(y))
    A = np.vstack([P, penalty * np.ones((1, P.shape[1]))])  # (n + 1, C)
    b = np.concatenate([target, [penalty]])
    weights, _ = nnls(A, b, maxiter=50 * P.shape[1])
    total = weights.sum()
    return weights / total if total > 0 else np.full(P.shape[1], 1.0 / P.shape[1])


@dataclass
class FittedTask:
    """A fitted per-task model: predict any region; describe what was chosen."""

    weights: dict[str, float]  # candidate name -> blend weight (only those > 0)
    scores: dict[str, dict[str, float]]  # candidate -> inner out-of-fold metrics (clean protocol)
    blend_score: dict[str, float]  # metrics of the blended inner out-of-fold predictions
    chosen: dict[str, dict]  # candidate -> what its final fit chose (penalty, epoch)
    protocol: str
    clip_negative: bool  # counts: negative predictions become 0
    _predictors: dict[str, Predict] = field(default_factory=dict, repr=False)

    def predict(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        total = np.zeros(len(index))
        for name, weight in self.weights.items():
            total += weight * self._predictors[name](index)
        return np.maximum(total, 0.0) if self.clip_negative else total

    def describe(self) -> dict[str, Any]:
        best = max(self.scores, key=lambda k: self.scores[k]["r2"]) if self.scores else None
        return {"protocol": self.protocol, "optimistic": self.protocol == "paper",
                "weights": {k: round(v, 4) for k, v in self.weights.items()},
                "chosen": self.chosen, "best_single": best,
                "inner_r2": {k: round(v["r2"], 4) for k, v in self.scores.items()},
                "inner_blend_r2": round(self.blend_score.get("r2", float("nan")), 4)}


def fit_task(inputs: TaskInputs, train_index: np.ndarray, *, protocol: str = "clean",
             seed: int = 0, config: PredictorConfig | None = None,
             selection_index: np.ndarray | None = None, device: str = "cpu") -> FittedTask:
    """Fits the blend on the labelled regions of `train_index`.

    Clean protocol: only `inputs.y[train_index]` is read. Paper protocol: the blend weights are
    fitted on `inputs.y[selection_index]` (the test fold): OPTIMISTIC.
    """
    check_protocol(protocol)
    config = config or PredictorConfig()
    y = np.asarray(inputs.y, dtype=np.float64)
    train = np.asarray(train_index, dtype=np.int64)
    train = train[np.isfinite(y[train])]
    if len(train) < max(config.inner_folds, 3):
        raise InputError(f"only {len(train)} labelled training regions", field="target",
                         hint="Give a target with more labelled regions.")
    non_negative = bool((y[train] >= 0).all())
    candidates = build_candidates(inputs, config, non_negative=non_negative, seed=seed,
                                  device=device)
    names = [c.name for c in candidates]

    if protocol == "paper":
        if selection_index is None:
            raise ValueError("the paper protocol needs selection_index (the test fold)")
        held = np.asarray(selection_index, dtype=np.int64)
        held_y = y[held]
        predictors = {c.name: c.fit(train, y) for c in candidates}
        held_predictions = np.stack([predictors[n](held) for n in names], axis=1)  # (m, C)
        if non_negative:
            held_predictions = np.maximum(held_predictions, 0.0)
        weights = _weights(held_predictions, held_y, config)
        scores = {n: regression_metrics(held_y, held_predictions[:, i])
                  for i, n in enumerate(names)}
        blend = regression_metrics(held_y, held_predictions @ weights)
        chosen = {c.name: dict(c.info) for c in candidates}
    else:
        inner = kfold_splits(train, min(config.inner_folds, len(train)),
                             shuffle=config.inner_shuffle, seed=seed)
        oof = np.zeros((len(train), len(candidates)))  # (n_train, C)
        position = {region: i for i, region in enumerate(train)}
        for inner_train, inner_test in inner:
            rows = [position[r] for r in inner_test]
            for c, candidate in enumerate(candidates):
                oof[rows, c] = candidate.fit(inner_train, y)(inner_test)
        if non_negative:
            oof = np.maximum(oof, 0.0)
        oof = np.nan_to_num(oof, nan=0.0, posinf=0.0, neginf=0.0)
        weights = _weights(oof, y[train], config)
        scores = {n: regression_metrics(y[train], oof[:, i]) for i, n in enumerate(names)}
        blend = regression_metrics(y[train], oof @ weights)
        predictors, chosen = {}, {}
        for c, candidate in enumerate(candidates):
            if weights[c] > 0:
                predictors[candidate.name] = candidate.fit(train, y)
                chosen[candidate.name] = dict(candidate.info)
    kept = {n: float(w) for n, w in zip(names, weights, strict=True) if w > 0}
    return FittedTask(weights=kept, scores=scores, blend_score=blend, chosen=chosen,
                      protocol=protocol, clip_negative=non_negative,
                      _predictors={n: predictors[n] for n in kept})


def _weights(predictions: np.ndarray, y: np.ndarray, config: PredictorConfig) -> np.ndarray:
    if config.combine == "best":
        errors = ((predictions - y[:, None]) ** 2).mean(axis=0)
        weights = np.zeros(predictions.shape[1])
        weights[int(np.argmin(errors))] = 1.0
        return weights
    if config.combine != "stack":
        raise ValueError(f"unknown combine {config.combine!r}")
    weights = convex_weights(predictions, y)
    weights[weights < config.min_weight] = 0.0
    return weights / weights.sum()


# ---------------------------------------------------------------- outer evaluation
@dataclass
class TaskEvaluation:
    """Outer K-fold result of the per-task model, and the model for unlabelled regions."""

    pooled: PooledPrediction  # out-of-fold predictions (labelled), final model's (unlabelled)
    choices: list[dict]  # per outer fold: weights, inner scores, penalties
    final: FittedTask  # fitted on all labelled regions (clean protocol)

    @property
    def metrics(self) -> dict[str, float]:
        return self.pooled.metrics

    def to_dict(self) -> dict[str, Any]:
        return {**self.pooled.to_dict(), "final": self.final.describe()}


def make_fit_predict(embeddings: np.ndarray | None, semantic: np.ndarray | None,
                     features: np.ndarray | dict[str, np.ndarray] | None, *, seed: int = 0,
                     device: str = "cpu", config: PredictorConfig | None = None,
                     **options: Any):
    """A `fit_predict` for `cross_val_predict_pooled` running `fit_task` on each fold.

    `options` may hold PredictorConfig fields (e.g. prompt4re=True, inner_folds=3).
    """
    if options:
        known = {k: v for k, v in options.items() if k in PredictorConfig.__dataclass_fields__}
        config = PredictorConfig(**{**(config.__dict__ if config else {}), **known})

    def fit_predict(_inputs, y, train_index, predict_index, *, selection_index=None):
        inputs = TaskInputs(embeddings, semantic, features, y)
        protocol = "paper" if selection_index is not None else "clean"
        fitted = fit_task(inputs, train_index, protocol=protocol, seed=seed, config=config,
                          selection_index=selection_index, device=device)
        return fitted.predict(predict_index), fitted.describe()

    return fit_predict


def evaluate_task(inputs: TaskInputs, *, folds: int = 10, shuffle: bool = False,
                  fold_seed: int = LITERATURE_SEED, protocol: str = "clean", seed: int = 0,
                  config: PredictorConfig | None = None, device: str = "cpu",
                  progress: Callable[[float, str], None] | None = None) -> TaskEvaluation:
    """Outer K-fold of `fit_task`: pooled held-out predictions, metrics, per-fold choices, and the
    final model fitted on all labelled regions (which also predicts the unlabelled ones)."""
    check_protocol(protocol)
    y = np.asarray(inputs.y, dtype=np.float64)
    base = make_fit_predict(inputs.embeddings, inputs.semantic, inputs.raw_features, seed=seed,
                            device=device, config=config)
    labelled = np.flatnonzero(np.isfinite(y))
    splits = kfold_splits(labelled, folds, shuffle=shuffle, seed=fold_seed)
    done = [0]

    def fit_predict(_inputs, y_visible, train_index, predict_index, *, selection_index=None):
        out = base(_inputs, y_visible, train_index, predict_index,
                   selection_index=selection_index)
        done[0] += 1
        if progress is not None:
            progress(done[0] / (len(splits) + 1), f"fold {done[0]}/{len(splits)}")
        return out

    pooled = cross_val_predict_pooled(fit_predict, None, y, splits=splits, protocol=protocol,
                                      predict_unlabelled=False)
    final = fit_task(inputs, labelled, protocol="clean", seed=seed, config=config, device=device)
    unlabelled = np.flatnonzero(~np.isfinite(y))
    if len(unlabelled):
        pooled.predictions[unlabelled] = final.predict(unlabelled)
    if progress is not None:
        progress(1.0, "final model")
    pooled.label = PROTOCOL_LABELS[protocol]
    return TaskEvaluation(pooled=pooled, choices=pooled.fold_info, final=final)


def benchmark_fit_predict(dataset, embeddings: np.ndarray | None, semantic: np.ndarray | None,
                          y_visible: np.ndarray, train_index: np.ndarray,
                          predict_index: np.ndarray, *, device: str = "cpu",
                          seed: int = 0) -> np.ndarray:
    """The default model fitted on `train_index` of `dataset`, predicting `predict_index`."""
    from engine.training.features import literature_features, robust_features

    features = {"raw": literature_features(dataset), "robust": robust_features(dataset)}
    inputs = TaskInputs(embeddings, semantic, features, y_visible)
    return fit_task(inputs, train_index, seed=seed, device=device).predict(predict_index)


def load_fitted_task(saved: dict, inputs: TaskInputs, *, device: str = "cpu",
                     config: PredictorConfig | None = None) -> FittedTask:
    """Rebuilds a FittedTask from `engine.training.task_io.load_task_model` over new inputs."""
    config = config or PredictorConfig()
    blocks = input_blocks(inputs, config)
    predictors: dict[str, Predict] = {}
    for name, (arrays, meta) in saved["predictors"].items():
        if meta["kind"] == "ridge":
            if meta["block"] not in blocks:
                raise InputError(f"the model needs the {meta['block']} inputs, which these "
                                 "regions do not have",
                                 hint="Predict with the same layers and language model as at "
                                      "training.")
            predictors[name] = RidgePredict.from_state(arrays, meta, blocks)
        elif meta["kind"] == "prompt4re":
            predictors[name] = Prompt4REPredict.from_state(arrays, meta, inputs.embeddings,
                                                           inputs.semantic, device)
        else:
            raise InputError(f"unknown predictor kind {meta['kind']!r} in the model",
                             hint="Train the model again with this version.")
    return FittedTask(weights=dict(saved["weights"]), scores={}, blend_score={}, chosen={},
                      protocol="clean", clip_negative=bool(saved["clip_negative"]),
                      _predictors=predictors)
