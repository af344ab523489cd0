"""TabM over a feature table: numeric embeddings and a parameter-efficient ensemble of MLPs.

A pure ``nn.Module`` (no device choice, I/O or logging). What it implements, after the papers:

- **piecewise-linear embeddings** (Gorishniy, Rubachev, Babenko 2022, "On embeddings for
  numerical features in tabular deep learning"; ``rtdl_num_embeddings``'
  ``PiecewiseLinearEmbeddings``, version B): each numeric feature's quantile-bin encoding (0
  below a bin, 1 above, linear inside; the outer bins unbounded) through its own linear map
  (zero-initialised) plus a linear term of the standardised value, ``d_embedding`` numbers per
  feature;
- **periodic embeddings** (the same paper's PLR): ``cos`` / ``sin`` of trainable frequencies
  times the value, then per feature a linear map and ReLU;
- **TabM** (Gorishniy, Kotelnikov, Babenko 2025, "TabM: advancing tabular deep learning with
  parameter-efficient ensembling"; the ``tabm`` package): ``k`` MLPs that share their weights,
  told apart BatchEnsemble-style by per-member scalings. ``arch="tabm"``: every linear layer is
  ``((x * r_i) W) * s_i + b_i``; ``arch="tabm-mini"``: one per-member scaling of the input only,
  the MLP itself shared. The first scaling is drawn per feature (the same value over a feature's
  embedding), the others start at one; each member has its own output layer. Training averages
  the members' losses; the prediction is the mean of their probabilities.

Features with two or fewer values on the training rows (one-hot categories, flags) enter as their
standardised value, without an embedding. The preprocessing (which columns, their mean and scale
after signed log1p, the bins) lives in buffers set by :meth:`TabM.set_preprocessing`, so the
state dict is self-contained.

Shapes: B rows, F input columns, N numeric (embedded) columns, C pass-through columns,
K bins, D embedding size, E ensemble members (``k``), H block width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpuseg.errors import ConfigError, DataError
from gpuseg.features.window import signed_log1p

EMBEDDINGS = ("piecewise", "periodic", "none")
ARCHS = ("tabm", "tabm-mini")


@dataclass(frozen=True)
class TabMSpec:
    """The architecture. Defaults: the ``tabm`` README's starting point (k = 32, dropout 0.1,
    depth 2 with embeddings), narrower blocks (128, not 512) to keep CPU training cheap."""

    k: int = 32
    n_blocks: int = 2
    d_block: int = 128
    dropout: float = 0.1
    embedding: Literal["piecewise", "periodic", "none"] = "piecewise"
    d_embedding: int = 8
    n_bins: int = 16  # piecewise: at most this many quantile bins per feature
    n_frequencies: int = 16  # periodic
    frequency_scale: float = 0.1  # periodic: initial frequencies ~ N(0, this), cut at 3 sd
    arch: Literal["tabm", "tabm-mini"] = "tabm-mini"

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"TabM embedding {self.embedding!r}; choose from {EMBEDDINGS}")
        if self.arch not in ARCHS:
            raise ConfigError(f"TabM arch {self.arch!r}; choose from {ARCHS}")
        if min(self.k, self.n_blocks, self.d_block, self.d_embedding, self.n_bins) < 1:
            raise ConfigError("TabM: k, n_blocks, d_block, d_embedding and n_bins must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"TabM dropout must be in [0, 1), got {self.dropout}")

    def state(self) -> dict:
        return asdict(self)


def _uniform_(x: torch.Tensor, fan_in: int) -> torch.Tensor:
    bound = fan_in**-0.5
    return nn.init.uniform_(x, -bound, bound)


class PerFeatureLinear(nn.Module):
    """N linear maps, one per feature: (B, N, I) -> (B, N, O)."""

    def __init__(self, n: int, d_in: int, d_out: int, bias: bool = True, zero: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n, d_out)) if bias else None
        if zero:
            nn.init.zeros_(self.weight)
        else:
            _uniform_(self.weight, d_in)
        if self.bias is not None:
            _uniform_(self.bias, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bni,nio->bno", x, self.weight)  # (B, N, O)
        return y if self.bias is None else y + self.bias


class PiecewiseLinearEmbedding(nn.Module):
    """(B, N) standardised values -> (B, N, D): linear term + linear map of the bin encoding.

    The bins live in buffers (:meth:`set_bins`): per feature and bin its left edge, inverse width
    and whether it exists (features have up to K bins)."""

    def __init__(self, n: int, n_bins: int, d: int):
        super().__init__()
        self.register_buffer("left", torch.zeros(n, n_bins))
        self.register_buffer("inv_width", torch.zeros(n, n_bins))
        self.register_buffer("lower", torch.zeros(n, n_bins))  # clamp; -inf: the first bin
        self.register_buffer("upper", torch.ones(n, n_bins))  # +inf: the last bin
        self.register_buffer("valid", torch.zeros(n, n_bins))
        self.scale = nn.Parameter(torch.empty(n, d))
        self.shift = nn.Parameter(torch.empty(n, d))
        _uniform_(self.scale, d)
        _uniform_(self.shift, d)
        self.bins = PerFeatureLinear(n, n_bins, d, bias=False, zero=True)

    def set_bins(self, edges: list[torch.Tensor]) -> None:
        """``edges[j]``: the increasing edges (n_j + 1,) of feature j's n_j <= K bins."""
        n, k = self.left.shape
        if len(edges) != n:
            raise DataError(f"{len(edges)} bin edge vectors for {n} features")
        for j, e in enumerate(edges):
            e = torch.as_tensor(e, dtype=torch.float32)
            m = len(e) - 1
            if not 1 <= m <= k or not bool((e[1:] > e[:-1]).all()):
                raise DataError(f"feature {j}: {m} bins (1 to {k}, increasing edges needed)")
            self.left[j].zero_()
            self.inv_width[j].zero_()
            self.valid[j].zero_()
            self.left[j, :m] = e[:-1]
            self.inv_width[j, :m] = 1.0 / (e[1:] - e[:-1])
            self.valid[j, :m] = 1.0
            self.lower[j] = 0.0
            self.upper[j] = 1.0
            self.lower[j, 0] = -math.inf
            self.upper[j, m - 1] = math.inf

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        t = (x.unsqueeze(-1) - self.left) * self.inv_width  # (B, N, K)
        return torch.maximum(torch.minimum(t, self.upper), self.lower) * self.valid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = x.unsqueeze(-1) * self.scale + self.shift  # (B, N, D)
        return linear + self.bins(self.encode(x))  # (B, N, D)


class PeriodicEmbedding(nn.Module):
    """(B, N) -> (B, N, D): ReLU(linear map of [cos(2 pi f x), sin(2 pi f x)]) per feature."""

    def __init__(self, n: int, n_frequencies: int, scale: float, d: int):
        super().__init__()
        self.frequencies = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(n, n_frequencies), 0.0, scale, -3 * scale, 3 * scale)
        )
        self.linear = PerFeatureLinear(n, 2 * n_frequencies, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * self.frequencies * x.unsqueeze(-1)  # (B, N, Q)
        return F.relu(self.linear(torch.cat([torch.cos(z), torch.sin(z)], dim=-1)))  # (B, N, D)


class EnsembleLinear(nn.Module):
    """A linear layer shared by E members, each with its own input and output scaling and bias
    (BatchEnsemble): (B, E, I) -> (B, E, O). Without ``adapters``: the plain shared layer."""

    def __init__(self, d_in: int, d_out: int, k: int, adapters: bool):
        super().__init__()
        self.weight = nn.Parameter(_uniform_(torch.empty(d_in, d_out), d_in))
        self.r = nn.Parameter(torch.ones(k, d_in)) if adapters else None
        self.s = nn.Parameter(torch.ones(k, d_out)) if adapters else None
        bias = _uniform_(torch.empty(d_out), d_in)  # the same start for every member
        self.bias = nn.Parameter(bias.repeat(k, 1) if adapters else bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.r is not None:
            x = x * self.r
        y = x @ self.weight  # (B, E, O)
        if self.s is not None:
            y = y * self.s
        return y + self.bias


class TabM(nn.Module):
    """Raw feature rows (B, F) -> one churn logit per member (B, E); :meth:`proba` gives the
    ensemble's probability (B,). Call :meth:`set_preprocessing` before use."""

    def __init__(self, n_inputs: int, n_numeric: int, n_pass: int, spec: TabMSpec):
        super().__init__()
        if n_numeric + n_pass < 1:
            raise DataError("TabM needs at least one input column")
        self.spec = spec
        self.n_inputs, self.n_numeric, self.n_pass = n_inputs, n_numeric, n_pass
        self.register_buffer("numeric", torch.zeros(n_numeric, dtype=torch.long))
        self.register_buffer("passed", torch.zeros(n_pass, dtype=torch.long))
        self.register_buffer("mean", torch.zeros(n_numeric + n_pass))
        self.register_buffer("std", torch.ones(n_numeric + n_pass))
        d = spec.d_embedding
        self.embed: nn.Module | None = None
        if n_numeric and spec.embedding == "piecewise":
            self.embed = PiecewiseLinearEmbedding(n_numeric, spec.n_bins, d)
        elif n_numeric and spec.embedding == "periodic":
            self.embed = PeriodicEmbedding(n_numeric, spec.n_frequencies, spec.frequency_scale, d)
        d_num = n_numeric * (d if self.embed is not None else 1)
        sections = [d if self.embed is not None else 1] * n_numeric + [1] * n_pass
        d_flat = d_num + n_pass
        k, mini = spec.k, spec.arch == "tabm-mini"
        # the first per-member scaling: one draw per feature, over that feature's section
        draw = torch.randn if self.embed is not None else _random_signs
        first = torch.repeat_interleave(draw(k, len(sections)), torch.tensor(sections), dim=1)
        self.input_scale = nn.Parameter(first) if mini else None  # (E, d_flat)
        self.blocks = nn.ModuleList(
            EnsembleLinear(d_flat if i == 0 else spec.d_block, spec.d_block, k, not mini)
            for i in range(spec.n_blocks)
        )
        if not mini:
            with torch.no_grad():
                self.blocks[0].r.copy_(first)
        self.dropout = nn.Dropout(spec.dropout)
        self.out_weight = nn.Parameter(_uniform_(torch.empty(k, spec.d_block), spec.d_block))
        self.out_bias = nn.Parameter(_uniform_(torch.empty(k), spec.d_block))

    def set_preprocessing(
        self,
        numeric: torch.Tensor,
        passed: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        edges: list[torch.Tensor] | None = None,
    ) -> None:
        """Column indices of the numeric and pass-through inputs, the mean and std of their
        signed log1p (numeric first), and (piecewise) each numeric column's bin edges on that
        standardised scale."""
        self.numeric.copy_(torch.as_tensor(numeric, dtype=torch.long))
        self.passed.copy_(torch.as_tensor(passed, dtype=torch.long))
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        if isinstance(self.embed, PiecewiseLinearEmbedding):
            if edges is None:
                raise DataError("piecewise embeddings need bin edges")
            self.embed.set_bins(edges)

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) raw -> (B, N + C): the kept columns, signed log1p, standardised."""
        cols = torch.cat([self.numeric, self.passed])
        return (signed_log1p(x[:, cols].float()) - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardized(x)  # (B, N + C)
        num, rest = z[:, : self.n_numeric], z[:, self.n_numeric :]
        if self.embed is not None:
            num = self.embed(num).flatten(1)  # (B, N D)
        h = torch.cat([num, rest], dim=1)  # (B, d_flat)
        h = h.unsqueeze(1).expand(-1, self.spec.k, -1)  # (B, E, d_flat)
        if self.input_scale is not None:
            h = h * self.input_scale
        for block in self.blocks:
            h = self.dropout(F.relu(block(h)))  # (B, E, H)
        return (h * self.out_weight).sum(-1) + self.out_bias  # (B, E)

    def proba(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's churn probability: the mean of the members', (B,)."""
        return torch.sigmoid(self(x)).mean(1)


def _random_signs(*shape: int) -> torch.Tensor:
    return torch.randint(0, 2, shape).float() * 2 - 1
