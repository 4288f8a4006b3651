"""Training SREL: self-supervised, full batch, a fixed epoch schedule (no label is read)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from engine.data.dataset import RegionDataset
from engine.errors import InputError
from engine.models.modeling_srel import (
    SREL,
    SRELConfig,
    SRELInputs,
    prepare_srel_inputs,
    schedule_epochs,
)

Progress = Callable[[float, str], None]  # (fraction in [0, 1], message)


@dataclass
class SRELResult:
    embeddings: np.ndarray  # (N, embedding_size) float32, row i = region i
    model: SREL  # trained, in eval mode
    losses: list[float]  # total self-supervised loss per epoch
    seconds: float  # wall time of preparation + training + final embedding
    config: SRELConfig
    epochs: int = 0  # epochs trained (the schedule's count when config.epochs is None)
    loss_parts: dict[str, list[float]] = field(default_factory=dict)  # each objective per epoch
    notes: list[str] = field(default_factory=list)  # fallbacks taken while preparing the inputs
    # epoch -> (N, embedding_size) embeddings after that many epochs (`snapshot_every`)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)


def fit_srel(dataset: RegionDataset, config: SRELConfig | None = None, *, device: str = "cpu",
             seed: int = 0, progress: Progress | None = None,
             snapshot_every: int = 0) -> SRELResult:
    """Train SREL on `dataset` for a fixed number of full-batch epochs and embed its regions.

    The epoch count is `config.epochs`, or when None the schedule of
    :func:`engine.models.modeling_srel.schedule_epochs` (2000 up to `dense_threshold` regions).

    Deterministic for a seed on a device: the same dataset, config and seed give the same
    embeddings. No target or class of the dataset is read.

    Args:
        dataset: the regions and their views and spatial priors.
        config: hyperparameters (default :class:`SRELConfig()`).
        device: "cpu" or "cuda".
        seed: seeds the initial weights, dropout and the sparse path's sampling.
        progress: called about 100 times with (fraction done, message).
        snapshot_every: when > 0, also embed the regions after every this many epochs (and
            after the last) into `SRELResult.snapshots`, for studies of the epoch; the
            training itself is unchanged (an eval-mode forward draws no random numbers).
    """
    config = config or SRELConfig()
    epochs = schedule_epochs(dataset.n_regions, config)
    if epochs < 0:
        raise InputError("epochs must be >= 0", field="epochs")
    if snapshot_every < 0:
        raise InputError("snapshot_every must be >= 0", field="snapshot_every")
    start = time.perf_counter()
    inputs = prepare_srel_inputs(dataset, config).to(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # CPU generator for the loss sampling
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN before an op writes it (a guard
    # against reading memory no op wrote, which nothing here does); on Manhattan these fills
    # of the H x N x N attention tensors were ~4% of a CPU step.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        model = SREL(config, inputs.view_specs).to(device)
        losses: list[float] = []
        parts_log: dict[str, list[float]] = {}
        snapshots: dict[int, np.ndarray] = {}
        report_every = max(1, epochs // 100)
        model.train()
        with _one_buffer(model) as flat:
            # Fused Adam over one tensor: one kernel and one step count for the whole model.
            optimizer = torch.optim.Adam([flat], lr=config.lr, weight_decay=config.weight_decay,
                                         fused=True)
            for epoch in range(epochs):
                flat.grad.zero_()
                parts = model.loss(inputs, model(inputs), generator)
                parts["total"].backward()
                optimizer.step()
                values = dict(zip(parts, torch.stack(list(parts.values())).detach().tolist(),
                                  strict=True))
                losses.append(values.pop("total"))
                for k, v in values.items():
                    parts_log.setdefault(k, []).append(v)
                if progress is not None and ((epoch + 1) % report_every == 0 or epoch + 1 == epochs):
                    progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f}")
                if snapshot_every and (epoch + 1) % snapshot_every == 0 and epoch + 1 < epochs:
                    snapshots[epoch + 1] = _embed(model, inputs)
                    model.train()
        embeddings = _embed(model, inputs)
        if snapshot_every:
            snapshots[epochs] = embeddings
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = was_filling
    return SRELResult(embeddings=embeddings, model=model, losses=losses,
                      seconds=time.perf_counter() - start, config=config, epochs=epochs,
                      loss_parts=parts_log, notes=list(inputs.notes), snapshots=snapshots)


@contextmanager
def _one_buffer(model: nn.Module) -> Iterator[nn.Parameter]:
    """The model's parameters laid end to end in one tensor, their gradients in another, while
    the block runs: each parameter (and its `.grad`) is a view of its stretch of them, so
    backward accumulates into the flat gradient and one optimizer step updates the whole
    model. Adam is elementwise, so this is Adam on each parameter (up to the kernel's
    rounding), except that a parameter no loss reaches gets a zero gradient (and so its weight
    decay) where set_to_none would leave it untouched. On Manhattan the optimizer's work on
    103 parameter tensors (a fused step that still visits each, and their zeroing) was ~5% of
    an SREL epoch on the CPU.

    On exit each parameter gets storage of its own again and no gradient, as safetensors
    (which refuses tensors sharing memory) and any later training expect."""
    params = list(model.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    start = 0
    for p in params:
        stop = start + p.numel()
        p.data = flat.data[start:stop].view_as(p)
        p.grad = flat.grad[start:stop].view_as(p)
        start = stop
    try:
        yield flat
    finally:
        for p in params:
            p.data = p.data.clone()
            p.grad = None


def _embed(model: SREL, inputs: SRELInputs) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(inputs).float().cpu().numpy().astype(np.float32)


def embed_with_model(model: SREL, dataset: RegionDataset, *, device: str = "cpu") -> np.ndarray:
    """Embeddings (N, d) float32 of `dataset`'s regions by a trained (or loaded) model.

    The dataset must have the views the model was trained on (same names, kinds and widths);
    for the same regions this gives the embeddings the training returned.
    """
    inputs = prepare_srel_inputs(dataset, model.config)
    have = [(s.name, s.kind, s.width) for s in inputs.view_specs]
    want = [(s.name, s.kind, s.width) for s in model.view_specs]
    if have != want:
        raise InputError(
            f"the data's views {have} differ from the model's {want}",
            hint="Use the same layers, fields and categories as when the model was trained.")
    model = model.to(device)
    return _embed(model, inputs.to(device))
