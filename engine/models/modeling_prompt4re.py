"""Prompt4RE: aligning region embeddings with a frozen language model's view (ToPT stage 2).

Per target: the region embeddings ask (queries) the regions' semantic vectors (keys and values,
one per region, from a frozen language model reading a task prompt) through multi-head
cross-attention; the answer, with a residual projection of the region embedding and LayerNorm,
is projected back to d, concatenated with the region embedding, and a linear head predicts the
target. The head's region half and bias start from a Ridge fit, its semantic half at zero, so
before any training step the model predicts exactly what the Ridge predicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from engine.errors import InputError


@dataclass
class Prompt4REConfig:
    hidden: int = 128  # width of the cross-attention (queries, keys and values projected to it)
    heads: int = 4  # attention heads (ToPT: 4); hidden must be divisible by heads
    dropout: float = 0.1  # dropout on the attention weights (ToPT: 0.1)
    target_transform: str = "none"  # "none" or "log1p": the head predicts log1p(target)

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise InputError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})",
                             field="hidden")
        if self.target_transform not in ("none", "log1p"):
            raise InputError(f"unknown target transform {self.target_transform!r}",
                             field="target_transform", hint="Use 'none' or 'log1p'.")

    def to_dict(self) -> dict:
        return asdict(self)


class Prompt4RE(nn.Module):
    r"""Cross-attention from region embeddings to semantic vectors, and a linear head.

    .. math::
        \hat r = (r - \mu_r) / \sigma_r, \quad \hat s = (s - \mu_s) / \sigma_s \\
        a_i = \mathrm{MHA}\big(W_Q \hat r_i,\; \{\hat s_j\}_j,\; \{\hat s_j\}_j\big), \quad
        z_i = W_P\,\mathrm{LN}(a_i + W_R \hat r_i) \\
        \hat y_i = w_r^\top \hat r_i + w_s^\top z_i + b

    over the regions j passed in the call. :math:`\hat y` is in the model's target units
    ((transformed target - mean) / scale); :meth:`predict` returns the target itself.
    The normalisation statistics are buffers (identity until :meth:`set_normalisation`), so a
    saved model carries them.

    Args:
        config (Prompt4REConfig): hyperparameters.
        region_dim (int): d, width of the region embeddings.
        semantic_dim (int): h, width of the semantic vectors.

    Shapes:
        - **input:** region embeddings :math:`(M, d)`, semantic vectors :math:`(M, h)`,
          optional `query_index` :math:`(Q,)` of the regions to predict (default: all M)
        - **output:** :math:`(Q,)`
    """

    def __init__(self, config: Prompt4REConfig, region_dim: int, semantic_dim: int) -> None:
        super().__init__()
        self.config = config
        self.region_dim, self.semantic_dim = region_dim, semantic_dim
        c = config
        self.query = nn.Linear(region_dim, c.hidden)
        self.attention = nn.MultiheadAttention(c.hidden, c.heads, dropout=c.dropout,
                                               kdim=semantic_dim, vdim=semantic_dim,
                                               batch_first=True)
        self.residual = nn.Linear(region_dim, c.hidden)
        self.norm = nn.LayerNorm(c.hidden)
        self.project = nn.Linear(c.hidden, region_dim)
        self.head = nn.Linear(2 * region_dim, 1)
        self.register_buffer("region_mean", torch.zeros(region_dim))
        self.register_buffer("region_scale", torch.ones(region_dim))
        self.register_buffer("semantic_mean", torch.zeros(semantic_dim))
        self.register_buffer("semantic_scale", torch.ones(semantic_dim))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.query.reset_parameters()
        self.attention._reset_parameters()
        self.residual.reset_parameters()
        self.norm.reset_parameters()
        self.project.reset_parameters()
        self.head.reset_parameters()

    def constructor_arguments(self) -> dict:
        """JSON-able arguments that rebuild this model (with its config)."""
        return {"region_dim": self.region_dim, "semantic_dim": self.semantic_dim}

    @torch.no_grad()
    def set_normalisation(self, region_mean: Tensor, region_scale: Tensor, semantic_mean: Tensor,
                          semantic_scale: Tensor, target_mean: float = 0.0,
                          target_scale: float = 1.0) -> None:
        """Input and target statistics (computed by the caller; inputs' use no label)."""
        self.region_mean.copy_(region_mean)
        self.region_scale.copy_(region_scale)
        self.semantic_mean.copy_(semantic_mean)
        self.semantic_scale.copy_(semantic_scale)
        self.target_mean.fill_(float(target_mean))
        self.target_scale.fill_(float(target_scale))

    def normalise(self, region: Tensor, semantic: Tensor) -> tuple[Tensor, Tensor]:
        return ((region - self.region_mean) / self.region_scale,
                (semantic - self.semantic_mean) / self.semantic_scale)

    @torch.no_grad()
    def init_head_from_ridge(self, coef_region: np.ndarray | Tensor, intercept: float) -> None:
        """Head's region half and bias from a Ridge fit (on normalised embeddings, in the model's
        target units); semantic half zero, so the model starts at the Ridge prediction."""
        coef = torch.as_tensor(np.asarray(coef_region, dtype=np.float32)).reshape(-1)
        if coef.numel() != self.region_dim:
            raise ValueError(f"Ridge has {coef.numel()} coefficients for {self.region_dim} dims")
        self.head.weight.zero_()
        self.head.weight[0, : self.region_dim] = coef
        self.head.bias.fill_(float(intercept))

    def forward(self, region: Tensor, semantic: Tensor, query_index: Tensor | None = None) -> Tensor:
        return self.forward_normalised(*self.normalise(region, semantic), query_index)

    def forward_normalised(self, r: Tensor, s: Tensor, query_index: Tensor | None = None) -> Tensor:
        """The forward pass on inputs already passed through :meth:`normalise`. Training calls
        it with inputs normalised once: normalising the fixed (M, h) semantic vectors again at
        every step cost 7% of a step (M = 180, h = 576, one CPU thread)."""
        # r: (M, d), s: (M, h)
        rq = r if query_index is None else r[query_index]  # (Q, d)
        q = self.query(rq).unsqueeze(0)  # (1, Q, hidden)
        kv = s.unsqueeze(0)  # (1, M, h)
        answer = self.attention(q, kv, kv, need_weights=False)[0].squeeze(0)  # (Q, hidden)
        z = self.project(self.norm(answer + self.residual(rq)))  # (Q, d)
        return self.head(torch.cat([rq, z], dim=-1)).squeeze(-1)  # (Q,)

    def to_target(self, output: Tensor) -> Tensor:
        """Model units -> the target (undo the scaling and the transform)."""
        y = output * self.target_scale + self.target_mean
        return torch.expm1(y) if self.config.target_transform == "log1p" else y

    @torch.no_grad()
    def predict(self, region: Tensor, semantic: Tensor, query_index: Tensor | None = None) -> Tensor:
        """Predictions of the target (eval mode, original units) for the query regions."""
        was_training = self.training
        self.eval()
        out = self.to_target(self(region, semantic, query_index))
        self.train(was_training)
        return out
