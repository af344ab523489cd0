"""Treatment effects from a campaign table, and Qini / AUUC curves to judge them.

A campaign table has one row per subscriber and past test: subscriber id (the run's id column),
offer, channel, date, treated (1 contacted, 0 held-out control), retained (1 stayed over the
label horizon after the date); accepted and revenue_after are optional. Treatment must have been
randomised within each offer (the synthetic world's is a fair coin).

:class:`TLearner` fits one gradient-boosting model of P(retained) on every control row, and one
per offer on that offer's treated rows with the channel as an extra input; the uplift of offer o
through channel c for features x is mu_o(x, c) - mu_0(x). :func:`crossfit` fits it on K folds of
subscribers, so each subscriber in the table gets effects from a model that never saw their
outcome (out of fold), and everyone else the mean of the K models. The learners fit
with scikit-learn on the CPU and predict where :meth:`CrossFit.to` puts them: scikit-learn's
predictor on a CPU, the same trees as torch tensors on a GPU (the predictions for every
subscriber and option are the heavy part at millions of subscribers).

:class:`SLearner` (the default) is one model over the features, the treated flag and the
treated flag times each offer and channel. When the table says who accepted the offer, a
:class:`TakeUp` model of P(accepted | offer, channel, x) on the treated rows gives the S-learner
one more input, the take-up log-odds (cross-fitted as well): acceptance is a far less noisy
outcome than retention, and the subscribers an offer helps are mostly those who take it up.

Qini curve (Radcliffe 2007): rows sorted by a score, at each cut the treated responders minus
the control responders scaled to the treated count, over the number of rows. The Qini
coefficient is the area between that curve and the straight line of random targeting (x in [0,
1]); AUUC is the area under the uplift curve (uplift among the first k rows times k / N).
Intervals are bootstrap percentiles over rows (paired for ratios of two scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from gpuseg.action.features import release_memory, take_rows
from gpuseg.data.ids import index_in_blocks
from gpuseg.errors import DataError
from gpuseg.evaluate.trees import HistGBTrees, TreeWalker

REQUIRED = ("offer", "channel", "treated", "retained")


@dataclass
class Campaigns:
    """A campaign table aligned to a run: ``row`` is the panel row of each test."""

    row: np.ndarray
    offer: np.ndarray  # (R,) str
    channel: np.ndarray  # (R,) str
    treated: np.ndarray  # (R,) int8
    retained: np.ndarray  # (R,) int8
    date: np.ndarray | None  # (R,) datetime64[D]
    counts: dict = field(default_factory=dict)
    accepted: np.ndarray | None = None  # (R,) int8: took the offer up (treated rows; 0 control)


def shared_strings(values: pa.ChunkedArray) -> np.ndarray:
    """``values`` as a numpy object array of str in which equal values are one object: 8 bytes
    a row, not a Python string each (16M campaign rows at 10M subscribers). Encoded a chunk at
    a time (no whole-column copy)."""
    values = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    out = np.empty(len(values), dtype=object)
    names: dict[str, str] = {}
    at = 0
    for chunk in values.chunks:
        enc = pc.cast(chunk, pa.string()).dictionary_encode()
        lut = np.asarray(
            [names.setdefault(str(x), str(x)) for x in enc.dictionary.to_pylist()], dtype=object
        )
        out[at : at + len(chunk)] = lut[enc.indices.to_numpy(zero_copy_only=False)]
        at += len(chunk)
    return out


def read_campaigns(path: str | Path, ids: np.ndarray, id_col: str) -> Campaigns:
    """Read and check a campaign table (Parquet or CSV); rows of subscribers that are not in the
    run are counted and left out. Ids are matched in Arrow (no pandas index of the run's ids),
    and a Parquet table is read one column at a time, so a table of tens of millions of tests
    stays within a few bytes a row beyond the largest column."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: campaign table not found")
    if p.suffix.lower() in (".parquet", ".pq"):  # only the columns used, one at a time
        present = set(pq.read_schema(p).names)

        def column(name: str) -> pa.ChunkedArray:
            return pq.read_table(p, columns=[name]).column(name)

    else:
        table = pa.Table.from_pandas(pd.read_csv(p), preserve_index=False)
        present = set(table.column_names)
        column = table.column
    for col in (id_col, *REQUIRED):
        if col not in present:
            raise DataError(f"{p}: no '{col}' column")
    flags = {}
    for col in ("treated", "retained"):
        v = pd.to_numeric(column(col).to_pandas(), errors="coerce")
        bad = ~v.isin([0, 1])
        if bad.any():
            raise DataError(f"{p}: column '{col}' row {int(np.flatnonzero(bad)[0]) + 2}: not 0/1")
        flags[col] = v.to_numpy(np.int8)
        del v, bad
    keys = column(id_col)
    if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        keys = pc.cast(keys, pa.string())
    found = index_in_blocks(keys, ids)
    del keys
    known = found >= 0
    rows = found[known]
    del found
    accepted = None
    if "accepted" in present:  # optional: only treated rows can take an offer up
        v = pd.to_numeric(column("accepted").to_pandas(), errors="coerce")
        bad = (flags["treated"] == 1) & ~v.isin([0, 1]).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 2
            raise DataError(f"{p}: column 'accepted' row {row}: not 0/1 on a treated row")
        took = np.where(flags["treated"] == 1, v.fillna(0).to_numpy(), 0).astype(np.int8)
        accepted = took[known]
        del v, bad, took
    date = None
    if "date" in present:
        date = (
            pd.to_datetime(column("date").filter(known).to_pandas(), errors="coerce")
            .to_numpy()
            .astype("datetime64[D]")
        )
    counts = dict(
        rows=int(len(known)), unknown_subscriber=int((~known).sum()), used=int(known.sum())
    )
    out = Campaigns(
        row=rows,
        offer=shared_strings(column("offer").filter(known)),
        channel=shared_strings(column("channel").filter(known)),
        treated=flags["treated"][known],
        retained=flags["retained"][known],
        date=date,
        counts=counts,
        accepted=accepted,
    )
    release_memory()
    return out


def _gbm(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=80,
        l2_regularization=1.0,
        random_state=seed,
    )


class _Booster:
    """One gradient-boosting model of a binary outcome, fitted on the CPU (scikit-learn) and
    predicting where :meth:`to` puts it: scikit-learn's predictor on a CPU, the same trees
    walked by :class:`~gpuseg.evaluate.trees.TreeWalker` on a GPU (equal to rounding)."""

    def __init__(self, seed: int) -> None:
        self.model = _gbm(seed)
        self.walker: TreeWalker | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Booster:
        self.model.fit(X, y)
        return self

    def to(self, device: torch.device) -> _Booster:
        cpu = torch.device(device).type == "cpu"
        self.walker = None if cpu else TreeWalker(HistGBTrees.from_model(self.model), device)
        return self

    def proba(self, X: np.ndarray) -> np.ndarray:
        """(n,) P(outcome = 1) of each row of ``X``."""
        if self.walker is not None:
            return self.walker.predict(X)
        return self.model.predict_proba(X)[:, 1]


class TLearner:
    """P(retained | control, x) and P(retained | offer o, channel c, x); see the module
    docstring. ``fit`` returns self; learned state ends in ``_``."""

    def __init__(self, channels: list[str], seed: int = 0) -> None:
        self.channels = list(channels)
        self.seed = seed

    def _with_channel(self, X: np.ndarray, channel: np.ndarray) -> np.ndarray:
        onehot = np.stack([channel == c for c in self.channels], axis=1).astype(np.float32)
        return np.concatenate([X, onehot], axis=1)

    def fit(
        self,
        X: np.ndarray,
        offer: np.ndarray,
        channel: np.ndarray,
        treated: np.ndarray,
        y: np.ndarray,
    ) -> TLearner:
        ctrl = treated == 0
        if ctrl.sum() < 50 or len(np.unique(y[ctrl])) < 2:
            raise DataError("campaign table: too few control rows to learn from (need 50)")
        self.control_ = _Booster(self.seed).fit(X[ctrl], y[ctrl])
        self.treated_ = {}
        for o in np.unique(offer):
            sel = (offer == o) & (treated == 1)
            if sel.sum() < 50 or len(np.unique(y[sel])) < 2:
                continue
            self.treated_[o] = _Booster(self.seed + 1).fit(
                self._with_channel(X[sel], channel[sel]), y[sel]
            )
        return self

    def to(self, device: torch.device) -> TLearner:
        """Predict on ``device`` from now on (the fitted trees, walked there)."""
        for m in (self.control_, *self.treated_.values()):
            m.to(device)
        return self

    def predict_control(self, X: np.ndarray) -> np.ndarray:
        return self.control_.proba(X)

    def predict_treated(self, X: np.ndarray, offer: str, channel: str) -> np.ndarray | None:
        m = self.treated_.get(offer)
        if m is None:
            return None
        return m.proba(self._with_channel(X, np.full(len(X), channel)))


class TakeUp:
    """P(accepted | treated with offer o through channel c, x): one gradient-boosting model on
    the treated rows, the offer and channel one-hot. ``fit`` returns self."""

    def __init__(self, offers: list[str], channels: list[str], seed: int = 0) -> None:
        self.offers = list(offers)
        self.channels = list(channels)
        self.seed = seed

    def _design(self, X: np.ndarray, offer, channel) -> np.ndarray:
        n = len(X)
        offer = np.broadcast_to(np.asarray(offer, dtype=object), (n,))
        channel = np.broadcast_to(np.asarray(channel, dtype=object), (n,))
        oh_o = np.stack([offer == o for o in self.offers], axis=1)
        oh_c = np.stack([channel == c for c in self.channels], axis=1)
        return np.concatenate([X, oh_o, oh_c], axis=1).astype(np.float32)

    def fit(self, X: np.ndarray, offer, channel, accepted: np.ndarray) -> TakeUp:
        self.model_ = _Booster(self.seed).fit(self._design(X, offer, channel), accepted)
        return self

    def to(self, device: torch.device) -> TakeUp:
        self.model_.to(device)
        return self

    def logit(self, X: np.ndarray, offer, channel) -> np.ndarray:
        """(n,) log-odds of taking ``offer`` up through ``channel`` (arrays or one value)."""
        p = np.clip(self.model_.proba(self._design(X, offer, channel)), 1e-4, 1 - 1e-4)
        return np.log(p / (1.0 - p))


def takeup_usable(camp: Campaigns, min_rows: int = 50) -> bool:
    """Whether ``camp`` says who took the offer up, with enough of both outcomes to learn from."""
    if camp.accepted is None:
        return False
    took = camp.accepted[camp.treated == 1]
    return int(took.sum()) >= min_rows and int((took == 0).sum()) >= min_rows


class SLearner(TLearner):
    """One gradient-boosting model of P(retained) over the features, a treated flag and the
    treated flag times each offer and each channel, so control and treated rows share the
    baseline; the uplift is f(x, treated with o through c) - f(x, control). With a take-up
    model (``takeup_``, see :func:`crossfit`) one more input: the treated flag times the
    log-odds that the subscriber takes offer o up through channel c."""

    takeup_: TakeUp | None = None

    def _design(self, X, offer, channel, treated, takeup=None):
        t = treated.astype(np.float32)[:, None]
        oh_o = np.stack([offer == o for o in self.offers_], axis=1) * t
        oh_c = np.stack([channel == c for c in self.channels], axis=1) * t
        parts = [X, t, oh_o, oh_c]
        if self.takeup_ is not None:  # (n, 1): zero on control rows
            parts.append(t * (np.zeros(len(X)) if takeup is None else takeup)[:, None])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def fit(self, X, offer, channel, treated, y, takeup=None) -> SLearner:
        """``takeup``: each row's take-up log-odds at its offer and channel, from a
        :class:`TakeUp` model that did not see the row (only with ``takeup_`` set)."""
        self.offers_ = sorted(set(np.asarray(offer).tolist()))
        if (treated == 0).sum() < 50 or len(np.unique(y)) < 2:
            raise DataError("campaign table: too few control rows to learn from (need 50)")
        self.model_ = _Booster(self.seed).fit(self._design(X, offer, channel, treated, takeup), y)
        return self

    def to(self, device: torch.device) -> SLearner:
        self.model_.to(device)
        if self.takeup_ is not None:
            self.takeup_.to(device)
        return self

    def predict_control(self, X: np.ndarray) -> np.ndarray:
        n = len(X)
        z = np.zeros(n, dtype=np.int8)
        return self.model_.proba(self._design(X, np.full(n, ""), np.full(n, ""), z))

    def predict_treated(self, X: np.ndarray, offer: str, channel: str) -> np.ndarray | None:
        if offer not in self.offers_:
            return None
        n = len(X)
        tu = None if self.takeup_ is None else self.takeup_.logit(X, offer, channel)
        d = self._design(X, np.full(n, offer), np.full(n, channel), np.ones(n, dtype=np.int8), tu)
        return self.model_.proba(d)


LEARNERS = {"t": TLearner, "s": SLearner}


@dataclass
class CrossFit:
    """K fitted learners and each table subscriber's fold (-1: not in the table)."""

    learners: list[TLearner]
    fold_of_row: np.ndarray  # (N,) int: fold of each panel row, -1 when not in the table
    oof_uplift: np.ndarray  # (R,) out-of-fold uplift of each table row at its offer and channel
    offers: list[str]
    learner: str = "s"
    takeup: bool = False  # the effect models had a take-up input (see crossfit)

    def to(self, device: torch.device) -> CrossFit:
        """Predict on ``device`` from now on (see :class:`_Booster`)."""
        for m in self.learners:
            m.to(device)
        return self

    def _models(self, rows: np.ndarray):
        """(model, positions in ``rows``, weight): each table subscriber's own out-of-fold
        model, everyone else the mean of the K fold models."""
        folds = self.fold_of_row[rows]
        k = len(self.learners)
        for i, m in enumerate(self.learners):
            own = np.flatnonzero(folds == i)
            if len(own):
                yield m, own, 1.0
        other = np.flatnonzero(folds < 0)
        if len(other):
            for m in self.learners:
                yield m, other, 1.0 / k

    def control(self, X: np.ndarray, base: int = 0) -> np.ndarray:
        """(len(X),) P(retained | control) of panel rows ``base .. base + len(X)``, whose
        features are ``X``: computed once per chunk for all its options (see :meth:`effects`)."""
        p0 = np.zeros(len(X))
        for m, at, w in self._models(np.arange(len(X)) + base):
            p0[at] += w * m.predict_control(X[at])
        return p0

    def effects(
        self,
        X: np.ndarray,
        rows: np.ndarray,
        offer: str,
        channel: str,
        base: int = 0,
        control: np.ndarray | None = None,
    ):
        """(P(retained | control), P(retained | treated)) for panel rows ``rows + base``, whose
        features are ``X[rows]`` (``base``: the first panel row of a chunk ``X``), each row
        from the model that did not see it (table subscribers) or the mean of all folds
        (others); ``control``: :meth:`control` of the chunk, when already computed. None when
        the learners know no ``offer``."""
        p0, p1 = np.zeros(len(rows)), np.zeros(len(rows))
        for m, at, w in self._models(rows + base):
            x = X[rows[at]]
            pt = m.predict_treated(x, offer, channel)
            if pt is None:
                return None
            p1[at] += w * pt
            if control is None:
                p0[at] += w * m.predict_control(x)
        return (p0 if control is None else control[rows]), p1


def sample_campaigns(camp: Campaigns, max_subscribers: int, seed: int = 0) -> Campaigns:
    """The tests of at most ``max_subscribers`` of the table's subscribers (a uniform random
    sample, every test of each kept; the table itself when it has no more): what the learners
    are fitted on, so that fitting memory and time stay bounded at any table size."""
    subs = np.unique(camp.row)
    if len(subs) <= max_subscribers:
        return camp
    keep = np.sort(np.random.default_rng([seed, 17]).choice(subs, max_subscribers, replace=False))
    sel = np.isin(camp.row, keep)
    counts = dict(camp.counts) | dict(fitted=int(sel.sum()), fitted_subscribers=int(len(keep)))
    return Campaigns(
        row=camp.row[sel],
        offer=camp.offer[sel],
        channel=camp.channel[sel],
        treated=camp.treated[sel],
        retained=camp.retained[sel],
        date=None if camp.date is None else camp.date[sel],
        counts=counts,
        accepted=None if camp.accepted is None else camp.accepted[sel],
    )


def crossfit(
    X: np.ndarray,
    camp: Campaigns,
    channels: list[str],
    folds: int = 5,
    seed: int = 0,
    learner: str = "s",
    takeup: bool = True,
    device: torch.device | str = "cpu",
) -> CrossFit:
    """Fit a learner (``s``: :class:`SLearner`, ``t``: :class:`TLearner`) on K folds of the
    table's subscribers (see the module docstring). The fits run on the CPU; the fitted
    learners predict on ``device``.

    With ``takeup`` (S-learner only) and a table that says who accepted the offer
    (:func:`takeup_usable`), a :class:`TakeUp` model is fitted per fold on the treated rows of
    the other folds first; each row's take-up log-odds come from the model of its own fold
    (one that did not see the row), and fold k's effect model keeps take-up model k for the
    rows it predicts. Acceptance is a far less noisy outcome than retention (a contact that
    helps mostly helps those who take the offer up), so the effect model finds who responds to
    which offer from fewer tests; where take-up says nothing the effect model leaves it
    unused."""
    rng = np.random.default_rng(seed)
    subs = np.unique(camp.row)
    fold_of_row = np.full(len(X), -1, dtype=np.int64)
    fold_of_row[subs] = rng.integers(0, folds, len(subs))
    fold = fold_of_row[camp.row]
    oof = np.full(len(camp.row), np.nan)
    learners = []
    x_all = take_rows(X, camp.row)  # (R, F): read once, the table's rows only
    offers = sorted(set(camp.offer.tolist()))
    takeups: list[TakeUp | None] = [None] * folds
    tu = None
    if takeup and learner == "s" and takeup_usable(camp):
        tu = np.zeros(len(camp.row))
        for k in range(folds):
            tr = (fold != k) & (camp.treated == 1)
            takeups[k] = TakeUp(offers, channels, seed + k).fit(
                x_all[tr], camp.offer[tr], camp.channel[tr], camp.accepted[tr]
            )
            te = fold == k
            tu[te] = takeups[k].logit(x_all[te], camp.offer[te], camp.channel[te])
    for k in range(folds):
        tr = fold != k
        m = LEARNERS[learner](channels, seed + k)
        kw = {}
        if tu is not None:
            m.takeup_, kw = takeups[k], dict(takeup=tu[tr])
        m.fit(
            x_all[tr], camp.offer[tr], camp.channel[tr], camp.treated[tr], camp.retained[tr], **kw
        )
        learners.append(m)
        te = np.flatnonzero(~tr)
        for o in np.unique(camp.offer[te]):
            for c in np.unique(camp.channel[te]):
                sel = te[(camp.offer[te] == o) & (camp.channel[te] == c)]
                if len(sel) == 0:
                    continue
                pt = m.predict_treated(x_all[sel], o, c)
                if pt is not None:
                    oof[sel] = pt - m.predict_control(x_all[sel])
    cf = CrossFit(learners, fold_of_row, oof, offers, learner, tu is not None)
    return cf.to(device)


# ---------------------------------------------------------------------------------------------
# Qini and AUUC


def qini_curve(y: np.ndarray, t: np.ndarray, score: np.ndarray, n_points: int = 51):
    """(x, qini, uplift_curve) at ``n_points`` shares of rows, best score first. ``qini`` is
    (treated responders - control responders * n_treated / n_control) / N; ``uplift_curve`` is
    (response rate treated - response rate control) * k / N."""
    order = np.lexsort((np.arange(len(score)), -np.asarray(score, dtype=np.float64)))
    y, t = np.asarray(y, float)[order], np.asarray(t, float)[order]
    n = len(y)
    nt, nc = np.cumsum(t), np.cumsum(1 - t)
    yt, yc = np.cumsum(y * t), np.cumsum(y * (1 - t))
    x = np.linspace(0, 1, n_points)
    k = np.clip(np.round(x * n).astype(int), 0, n)
    q = np.zeros(n_points)
    u = np.zeros(n_points)
    for i, kk in enumerate(k):
        if kk == 0:
            continue
        a, b, ta, tb = yt[kk - 1], yc[kk - 1], nt[kk - 1], nc[kk - 1]
        q[i] = (a - b * ta / tb) / n if tb > 0 else 0.0
        u[i] = ((a / ta if ta > 0 else 0.0) - (b / tb if tb > 0 else 0.0)) * kk / n
    return x, q, u


def qini_coefficient(y, t, score, n_points: int = 51) -> tuple[float, float]:
    """(Qini coefficient, AUUC) of ``score`` (see the module docstring)."""
    x, q, u = qini_curve(y, t, score, n_points)
    return float(np.trapezoid(q - x * q[-1], x)), float(np.trapezoid(u, x))


def qini_report(
    y,
    t,
    scores: dict[str, np.ndarray],
    n_boot: int = 200,
    seed: int = 0,
    ratio_to: str | None = None,
    diff_to: str | None = None,
) -> dict:
    """Qini coefficient and AUUC of each score with bootstrap 95% intervals; with ``ratio_to``,
    also each score's Qini over that score's, and with ``diff_to`` each score's Qini minus that
    score's, paired over the same resamples."""
    rng = np.random.default_rng(seed)
    n = len(y)
    out = {
        k: dict(zip(("qini", "auuc"), qini_coefficient(y, t, s), strict=True))
        for k, s in scores.items()
    }
    boots = {k: [] for k in scores}
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        for k, s in scores.items():
            boots[k].append(qini_coefficient(y[i], t[i], s[i], 26)[0])
    for k in scores:
        b = np.array(boots[k])
        out[k]["qini_ci"] = [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]
        if ratio_to is not None and k != ratio_to:
            r = b / np.where(np.array(boots[ratio_to]) == 0, np.nan, boots[ratio_to])
            out[k][f"ratio_to_{ratio_to}"] = (
                out[k]["qini"] / out[ratio_to]["qini"] if out[ratio_to]["qini"] else float("nan")
            )
            out[k][f"ratio_to_{ratio_to}_ci"] = [
                float(np.nanquantile(r, 0.025)),
                float(np.nanquantile(r, 0.975)),
            ]
        if diff_to is not None and k != diff_to:
            d = b - np.array(boots[diff_to])
            out[k][f"minus_{diff_to}"] = out[k]["qini"] - out[diff_to]["qini"]
            out[k][f"minus_{diff_to}_ci"] = [
                float(np.quantile(d, 0.025)),
                float(np.quantile(d, 0.975)),
            ]
    out["n"] = int(n)
    out["treated"] = int(np.sum(t))
    x, _, _ = qini_curve(y, t, next(iter(scores.values())))
    out["curves"] = {k: qini_curve(y, t, s)[1].tolist() for k, s in scores.items()}
    out["x"] = x.tolist()
    return out


def qini_by_offer(
    camp: Campaigns, oof_uplift: np.ndarray, churn_prob: np.ndarray, n_boot: int = 50
) -> dict[str, dict]:
    """Per offer of the fitted table: the Qini curves and coefficients (95 % bootstrap) of the
    out-of-fold learned effects and of the churn-risk ranking on the offer's realised tests,
    and learned minus risk, paired: whether the learned effects find the responders better
    than a risk list would, on this operator's own history."""
    out = {}
    for o in np.unique(camp.offer):
        sel = camp.offer == o
        learned = np.nan_to_num(oof_uplift[sel], nan=0.0)
        r = qini_report(
            camp.retained[sel],
            camp.treated[sel],
            dict(learned=learned, risk=churn_prob[camp.row[sel]]),
            n_boot=n_boot,
            diff_to="risk",
        )
        out[str(o)] = dict(
            x=r["x"],
            curves=r["curves"],
            n=r["n"],
            learned=r["learned"]["qini"],
            learned_ci=r["learned"]["qini_ci"],
            risk=r["risk"]["qini"],
            risk_ci=r["risk"]["qini_ci"],
            learned_minus_risk=r["learned"]["minus_risk"],
            learned_minus_risk_ci=r["learned"]["minus_risk_ci"],
            verdict=qini_verdict(*r["learned"]["minus_risk_ci"]),
        )
    return out


def qini_verdict(lo: float, hi: float) -> str:
    """How learned effects compare with the risk ranking, from the paired interval of their
    Qini difference."""
    if lo > 0:
        return "ahead of the churn-risk ranking"
    if hi < 0:
        return "behind the churn-risk ranking: do not trust them for this offer"
    return "not clearly ahead of the churn-risk ranking: more past tests would sharpen them"
