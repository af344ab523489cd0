"""A fitted binary ``HistGradientBoostingClassifier`` as plain arrays, saved as JSON.

scikit-learn has no file format for its gradient-boosting models other than pickle, which a run
directory never holds (a pickle runs code when it is read). :class:`HistGBTrees` copies the
public part of the fitted trees (each node's feature, threshold, side for missing values,
children and leaf value) into arrays and predicts by walking every tree at once over a block of
rows, the way scikit-learn's own predictor does: a missing value goes to the node's
missing-value side, otherwise ``x <= threshold`` goes left. Its probabilities equal
``predict_proba``'s to rounding. Categorical splits are refused (gpuseg's features are numeric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from gpuseg.errors import DataError

BLOCK_ROWS = 4096  # rows walked at once: (BLOCK_ROWS, trees) node indices in memory


@dataclass
class HistGBTrees:
    """All trees' nodes in one set of arrays (node ``i`` of tree ``t`` at ``roots[t] + i``)."""

    feature: np.ndarray  # (N,) int64, the split feature (0 at leaves)
    threshold: np.ndarray  # (N,) float64, x <= threshold goes left
    missing_left: np.ndarray  # (N,) bool, where a missing value goes
    left: np.ndarray  # (N,) int64, global index of the left child (itself at leaves)
    right: np.ndarray  # (N,) int64
    value: np.ndarray  # (N,) float64, the leaf's raw score (0 at splits)
    roots: np.ndarray  # (T,) int64
    baseline: float  # the raw score before the first tree
    n_features: int
    depths: np.ndarray  # (T,) int64, each tree's longest root-to-leaf path

    @classmethod
    def from_model(cls, model: Any) -> HistGBTrees:
        """From a fitted binary ``HistGradientBoostingClassifier`` (or gpuseg's
        ``HistGBBaseline``, whose ``model_`` it is)."""
        model = getattr(model, "model_", model)
        if len(model.classes_) != 2:
            raise DataError("hist_gb export: binary classifiers only")
        parts = {k: [] for k in ("feature", "threshold", "missing_left", "left", "right", "value")}
        leaf_parts, roots, depths, offset = [], [], [], 0
        for (tree,) in model._predictors:  # noqa: SLF001  (one tree per iteration when binary)
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise DataError("hist_gb export: categorical splits are not supported")
            leaf = nodes["is_leaf"].astype(bool)
            own = np.arange(len(nodes), dtype=np.int64) + offset
            parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            parts["left"].append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
            parts["right"].append(np.where(leaf, own, nodes["right"].astype(np.int64) + offset))
            parts["value"].append(np.where(leaf, nodes["value"], 0.0).astype(np.float64))
            leaf_parts.append(leaf)
            roots.append(offset)
            depths.append(int(nodes["depth"].max()))
            offset += len(nodes)
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        split = ~np.concatenate(leaf_parts)
        if np.isnan(arrays["threshold"][split]).any() or (arrays["threshold"] == -np.inf).any():
            raise DataError("hist_gb export: a split threshold is NaN or -inf")
        return cls(
            **arrays,
            roots=np.asarray(roots, dtype=np.int64),
            baseline=float(np.ravel(model._baseline_prediction)[0]),  # noqa: SLF001
            n_features=int(model.n_features_in_),
            depths=np.asarray(depths, dtype=np.int64),
        )

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw score (log-odds) of each row of ``X`` (n, F)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"hist_gb: {X.shape[-1]} features, the trees read {self.n_features}")
        out = np.full(len(X), self.baseline)
        # trees of one depth walked together, each group only as many steps as it is deep
        groups = [(int(d), self.roots[self.depths == d]) for d in np.unique(self.depths)]
        for lo in range(0, len(X), BLOCK_ROWS):
            block = np.ascontiguousarray(X[lo : lo + BLOCK_ROWS])  # (B, F)
            flat, starts = block.ravel(), np.arange(len(block))[:, None] * self.n_features
            for depth, roots in groups:
                node = np.broadcast_to(roots, (len(block), len(roots))).copy()  # (B, T_d)
                for _ in range(depth):  # a leaf's children are itself: it stays put
                    x = flat[starts + self.feature[node]]  # (B, T_d)
                    go_left = np.where(
                        np.isnan(x), self.missing_left[node], x <= self.threshold[node]
                    )
                    node = np.where(go_left, self.left[node], self.right[node])
                out[lo : lo + len(block)] += self.value[node].sum(axis=1)
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The churn probability (n,) of each row of ``X`` (n, F)."""
        return expit(self.raw(X))

    def state(self) -> dict:
        return dict(
            feature=self.feature.tolist(),
            threshold=[t if np.isfinite(t) else None for t in self.threshold.tolist()],
            missing_left=self.missing_left.astype(int).tolist(),
            left=self.left.tolist(),
            right=self.right.tolist(),
            value=self.value.tolist(),
            roots=self.roots.tolist(),
            baseline=self.baseline,
            n_features=self.n_features,
            depths=self.depths.tolist(),
        )

    @classmethod
    def from_state(cls, st: Any) -> HistGBTrees:
        """From :meth:`state`; a state whose arrays disagree raises ``ValueError``."""
        try:
            threshold = np.asarray(
                [np.inf if t is None else t for t in st["threshold"]], dtype=np.float64
            )
            trees = cls(
                np.asarray(st["feature"], dtype=np.int64),
                threshold,
                np.asarray(st["missing_left"], dtype=bool),
                np.asarray(st["left"], dtype=np.int64),
                np.asarray(st["right"], dtype=np.int64),
                np.asarray(st["value"], dtype=np.float64),
                np.asarray(st["roots"], dtype=np.int64),
                float(st["baseline"]),
                int(st["n_features"]),
                np.asarray(st["depths"], dtype=np.int64),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a hist_gb state ({exc})") from None
        n = len(trees.feature)
        fields = (trees.threshold, trees.missing_left, trees.left, trees.right, trees.value)
        ok = (
            all(a.shape == (n,) for a in fields)
            and trees.roots.ndim == 1
            and len(trees.roots) > 0
            and trees.depths.shape == trees.roots.shape
            and (trees.depths >= 0).all()
            and all(((a >= 0) & (a < n)).all() for a in (trees.left, trees.right, trees.roots))
            and ((trees.feature >= 0) & (trees.feature < trees.n_features)).all()
            and np.isfinite(trees.value).all()
        )
        if not ok:
            raise ValueError("the hist_gb trees' arrays disagree")
        return trees


class TreeWalker:
    """:class:`HistGBTrees` as torch tensors on ``device``: the same walk (a missing value to the
    node's missing-value side, otherwise ``x <= threshold`` left; float64 as scikit-learn
    compares), every tree at once over ``block_rows`` rows, on the GPU. Its probabilities equal
    ``predict_proba``'s to rounding; on a CPU scikit-learn's own predictor is the faster one."""

    def __init__(self, trees: HistGBTrees, device: torch.device, block_rows: int = 1 << 17) -> None:
        def put(a: np.ndarray):
            return torch.as_tensor(a).to(device)

        self.device, self.block_rows, self.n_features = device, block_rows, trees.n_features
        self.feature, self.threshold = put(trees.feature), put(trees.threshold)
        self.missing_left, self.left, self.right = (
            put(trees.missing_left),
            put(trees.left),
            put(trees.right),
        )
        self.value, self.roots = put(trees.value), put(trees.roots)
        self.depth, self.baseline = int(trees.depths.max()), trees.baseline

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The probability (n,) of each row of ``X`` (n, F), as a numpy array."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"hist_gb: {X.shape[-1]} features, the trees read {self.n_features}")
        out = np.empty(len(X))
        for lo in range(0, len(X), self.block_rows):
            x = torch.as_tensor(X[lo : lo + self.block_rows]).to(self.device, torch.float64)
            node = self.roots.expand(len(x), -1).clone()  # (B, T)
            for _ in range(self.depth):  # a leaf's children are itself: it stays put
                v = torch.gather(x, 1, self.feature[node])  # (B, T)
                go_left = torch.where(v.isnan(), self.missing_left[node], v <= self.threshold[node])
                node = torch.where(go_left, self.left[node], self.right[node])
            raw = self.value[node].sum(dim=1) + self.baseline  # (B,)
            out[lo : lo + len(x)] = torch.sigmoid(raw).cpu().numpy()
        return out
