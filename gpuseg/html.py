"""The self-contained HTML report: one file, inline CSS and inline SVG charts, no network needed.

``render_report(run_dir, cfg, backend)`` reads the report directory written by
:func:`gpuseg.report.write_report` (segments.csv, effects.csv, rules.csv, tags.csv,
concentration.json, value_stability.csv, crosstab_*.csv, quality.json) and the run's own artifacts
(panel churn labels, predictions.parquet, embeddings.parquet, segments.parquet, split.npz,
metrics.json, cluster.json), and writes ``RUN/report/report.html``. It computes two things itself:
the churn lift/gain and calibration curves on the test split, and a 2-D map of a sample of the
embeddings (cuML UMAP on GPU, umap-learn when installed, else PCA; see :meth:`Backend.umap`).

Every chart is SVG drawn here from numbers; every text goes through :func:`html.escape`. The page
holds aggregates only: no subscriber ID is written. A section whose input file is missing shows a
short "not available" note instead of failing.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.backend import Backend, resolve_backend
from gpuseg.config import RunConfig
from gpuseg.metrics import reliability_curve, roc_auc
from gpuseg.store import write_text_atomic

# (id, heading) of every section, in page order
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("segments", "Segment sizes and revenue"),
    ("concentration", "Value concentration"),
    ("value-stability", "Value x stability"),
    ("churn", "Churn model: lift, gain and calibration"),
    ("map", "Map of the embeddings"),
    ("profiles", "Segment profiles"),
    ("tags", "Tags"),
    ("rules", "Decision rules"),
    ("quality", "Segment quality"),
    ("crosstabs", "Cross-tabs"),
    ("notes", "Notes"),
)

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
INK = "#222"
GRID = "#ddd"
FONT = 11  # px, chart text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#222;
background:#fff;line-height:1.4}
main{max-width:1180px;margin:0 auto;padding:16px 24px}
header h1{margin:8px 0 2px;font-size:26px}
nav{font-size:13px;margin:8px 0 16px}nav a{margin-right:12px;color:#4e79a7}
section{border-top:1px solid #ddd;padding:8px 0 16px}
h2{font-size:20px;margin:10px 0}h3{font-size:15px;margin:12px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#555}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:4px 0}figcaption{font-size:12px;color:#555;max-width:640px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.t,th.t{text-align:left}
.na{color:#888;font-style:italic}.small{font-size:12px;color:#555}
svg text{font-family:inherit}
@media print{nav{display:none}section{break-inside:avoid-page}main{max-width:none}}
"""


# ---------------------------------------------------------------------------------------------
# Small formatting helpers


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def pct(v: Any, digits: int = 1) -> str:
    return f"{float(v) * 100:.{digits}f}%" if _finite(v) else "n/a"


def num(v: Any, digits: int = 3) -> str:
    if not _finite(v):
        return "n/a"
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def _short(text: Any, n: int = 46) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _color(i: int) -> str:
    return PALETTE[int(i) % len(PALETTE)]


def _mix(c0: tuple[int, int, int], c1: tuple[int, int, int], t: float) -> str:
    t = min(max(float(t), 0.0), 1.0) if _finite(t) else 0.0
    r, g, b = (round(a + (b_ - a) * t) for a, b_ in zip(c0, c1, strict=False))
    return f"#{r:02x}{g:02x}{b:02x}"


def seq_color(t: float) -> str:
    """White to blue for t in [0, 1]."""
    return _mix((255, 255, 255), (44, 98, 160), t)


def div_color(t: float) -> str:
    """Red (t=-1) to white (0) to blue (+1)."""
    if not _finite(t):
        return "#eeeeee"
    return _mix((255, 255, 255), (200, 60, 60), -t) if t < 0 else seq_color(t)


def _ink_on(t: float) -> str:
    return "#fff" if _finite(t) and abs(t) > 0.6 else INK


# ---------------------------------------------------------------------------------------------
# SVG charts


def svg(width: float, height: float, body: str, title: str) -> str:
    return (
        f'<svg role="img" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-size="{FONT}"><title>{esc(title)}</title>{body}</svg>'
    )


def _text(x: float, y: float, s: Any, anchor: str = "start", **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{esc(s)}</text>'


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    out, cx = [], x
    for name, color in items:
        out.append(f'<rect x="{cx:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>')
        out.append(_text(cx + 14, y, name))
        cx += 24 + 6.5 * len(str(name))
    return "".join(out)


def bar_chart(
    labels: Sequence[Any],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    title: str,
    fmt: Callable[[Any], str] = pct,
    errors: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    width: int = 700,
    label_width: int = 290,
) -> str:
    """Horizontal grouped bars: one group per label, one bar per series (name, values, color);
    ``errors`` maps a series name to (lo, hi) whiskers."""
    errors = errors or {}
    bar_h, gap = 12, 8
    group_h = bar_h * len(series) + gap
    top = 24 if len(series) > 1 else 8
    plot_w = width - label_width - 70
    vals = [float(v) for _, vs, _ in series for v in vs if _finite(v)]
    vals += [float(v) for lo_hi in errors.values() for v in lo_hi[1] if _finite(v)]
    vmax = max(vals + [0.0]) or 1.0
    height = top + group_h * len(labels) + 20
    body = []
    if len(series) > 1:
        body.append(_legend([(n, c) for n, _, c in series], label_width, 14))
    x0 = label_width
    for i, label in enumerate(labels):
        gy = top + i * group_h
        body.append(
            f"<g><title>{esc(label)}</title>"
            + _text(x0 - 6, gy + group_h / 2, _short(label), "end")
            + "</g>"
        )
        for j, (name, vs, color) in enumerate(series):
            v = vs[i]
            y = gy + j * bar_h
            w = plot_w * float(v) / vmax if _finite(v) and float(v) > 0 else 0.0
            body.append(
                f'<rect x="{x0}" y="{y:.1f}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}">'
                f"<title>{esc(f'{label}, {name}: {fmt(v)}')}</title></rect>"
            )
            end = w
            if name in errors:
                lo, hi = errors[name][0][i], errors[name][1][i]
                if _finite(lo) and _finite(hi):
                    xl, xh = x0 + plot_w * lo / vmax, x0 + plot_w * hi / vmax
                    ym = y + (bar_h - 2) / 2
                    body.append(
                        f'<path d="M{xl:.1f} {ym:.1f}H{xh:.1f}M{xl:.1f} {ym - 3:.1f}v6'
                        f'M{xh:.1f} {ym - 3:.1f}v6" stroke="{INK}" fill="none"/>'
                    )
                    end = max(end, xh - x0)
            body.append(_text(x0 + end + 4, y + bar_h - 3, fmt(v), font_size=10))
    body.append(f'<path d="M{x0} {top - 2}V{height - 16}" stroke="{INK}"/>')
    return svg(width, height, "".join(body), title)


def stacked_bars(
    labels: Sequence[Any],
    parts: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    width: int = 800,
    label_width: int = 290,
) -> str:
    """Horizontal 100% bars: each label's shares over ``parts`` (name, values)."""
    bar_h = 16
    top = 24
    plot_w = width - label_width - 20
    height = top + (bar_h + 6) * len(labels) + 8
    body = [_legend([(n, _color(k)) for k, (n, _) in enumerate(parts)], label_width, 14)]
    for i, label in enumerate(labels):
        y = top + i * (bar_h + 6)
        body.append(_text(label_width - 6, y + bar_h - 4, _short(label), "end"))
        total = sum(float(vs[i]) for _, vs in parts if _finite(vs[i])) or 1.0
        x = float(label_width)
        for k, (name, vs) in enumerate(parts):
            share = float(vs[i]) / total if _finite(vs[i]) else 0.0
            w = plot_w * share
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_color(k)}">'
                f"<title>{esc(f'{label}, {name}: {pct(share)}')}</title></rect>"
            )
            if w > 34:
                body.append(_text(x + w / 2, y + bar_h - 4, pct(share, 0), "middle", fill="#fff"))
            x += w
    return svg(width, height, "".join(body), title)


def line_chart(
    series: Sequence[dict],
    *,
    title: str,
    x_label: str,
    y_label: str,
    xlim: tuple[float, float] = (0.0, 1.0),
    ylim: tuple[float, float] = (0.0, 1.0),
    fmt_x: Callable[[Any], str] = lambda v: pct(v, 0),
    fmt_y: Callable[[Any], str] = lambda v: pct(v, 0),
    width: int = 420,
    height: int = 300,
    ticks: int = 5,
) -> str:
    """Lines (and markers) on linear axes. Each series: name, x, y, color, and optionally
    dash (bool) and markers (bool)."""
    left, right, top, bottom = 56, 24, 26, 42
    pw, ph = width - left - right, height - top - bottom
    (x_a, x_b), (y_a, y_b) = xlim, ylim
    x_b = x_b if x_b > x_a else x_a + 1
    y_b = y_b if y_b > y_a else y_a + 1

    def sx(v: float) -> float:
        return left + pw * (v - x_a) / (x_b - x_a)

    def sy(v: float) -> float:
        return top + ph * (1 - (v - y_a) / (y_b - y_a))

    body = []
    for t in range(ticks + 1):
        xv = x_a + (x_b - x_a) * t / ticks
        yv = y_a + (y_b - y_a) * t / ticks
        body.append(f'<path d="M{left} {sy(yv):.1f}H{left + pw}" stroke="{GRID}"/>')
        body.append(_text(left - 4, sy(yv) + 4, fmt_y(yv), "end", font_size=10))
        body.append(f'<path d="M{sx(xv):.1f} {top + ph}v4" stroke="{INK}"/>')
        body.append(_text(sx(xv), top + ph + 15, fmt_x(xv), "middle", font_size=10))
    body.append(f'<path d="M{left} {top}V{top + ph}H{left + pw}" stroke="{INK}" fill="none"/>')
    body.append(_text(left + pw / 2, height - 6, x_label, "middle"))
    body.append(
        f'<text x="12" y="{top + ph / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + ph / 2:.1f})">{esc(y_label)}</text>'
    )
    legend = []
    for s in series:
        pts = [
            (sx(float(x)), sy(float(y)))
            for x, y in zip(s["x"], s["y"], strict=False)
            if _finite(x) and _finite(y)
        ]
        if not pts:
            continue
        d = "M" + "L".join(f"{x:.1f} {y:.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5 4"' if s.get("dash") else ""
        body.append(
            f'<path d="{d}" stroke="{s["color"]}" stroke-width="2" fill="none"{dash}>'
            f"<title>{esc(s['name'])}</title></path>"
        )
        if s.get("markers"):
            body.extend(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s["color"]}"/>' for x, y in pts
            )
        legend.append((s["name"], s["color"]))
    body.append(_legend(legend, left, 14))
    return svg(width, height, "".join(body), title)


def heatmap(
    rows: Sequence[Any],
    cols: Sequence[Any],
    shade: np.ndarray,
    texts: Sequence[Sequence[Sequence[str]]],
    *,
    title: str,
    color: Callable[[float], str] = seq_color,
    cell_w: int = 110,
    cell_h: int = 40,
    row_label_width: int = 150,
) -> str:
    """A grid of cells: fill from ``shade[i, j]`` through ``color``; ``texts[i][j]`` are the lines
    written in the cell (the first in bold)."""
    top = 22
    width = row_label_width + cell_w * len(cols) + 4
    height = top + cell_h * len(rows) + 4
    body = []
    for j, c in enumerate(cols):
        body.append(
            _text(row_label_width + cell_w * (j + 0.5), top - 7, _short(c, cell_w // 6), "middle")
        )
    for i, r in enumerate(rows):
        y = top + i * cell_h
        body.append(
            _text(row_label_width - 6, y + cell_h / 2 + 4, _short(r, row_label_width // 6), "end")
        )
        for j in range(len(cols)):
            x = row_label_width + j * cell_w
            t = float(shade[i, j])
            lines = texts[i][j]
            body.append(
                f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'fill="{color(t)}"><title>{esc(f"{r} / {c}: " + "; ".join(lines))}</title></rect>'
            )
            step = 13
            y0 = y + (cell_h - 2) / 2 - step * (len(lines) - 1) / 2 + 4
            for k, line in enumerate(lines):
                weight = {"font_weight": "bold"} if k == 0 else {}
                body.append(
                    _text(
                        x + (cell_w - 2) / 2,
                        y0 + k * step,
                        line,
                        "middle",
                        fill=_ink_on(t),
                        font_size=10,
                        **weight,
                    )
                )
    return svg(width, height, "".join(body), title)


def scatter(
    xy: np.ndarray,
    labels: np.ndarray,
    names: dict[int, str],
    *,
    title: str,
    width: int = 720,
    height: int = 520,
) -> str:
    """Points coloured by segment, one <g> per segment; axes clipped to the 0.5-99.5 percentiles."""
    left, top, pad = 10, 10, 10
    legend_w = 300
    pw, ph = width - left - legend_w - pad, height - top - pad
    lo = np.nanpercentile(xy, 0.5, axis=0)
    hi = np.nanpercentile(xy, 99.5, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    z = np.clip((xy - lo) / span, 0, 1)
    px = left + z[:, 0] * pw
    py = top + (1 - z[:, 1]) * ph
    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="{GRID}"/>']
    for k, seg in enumerate(sorted(np.unique(labels).tolist())):
        sel = labels == seg
        dots = "".join(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.7"/>'
            for a, b in zip(px[sel], py[sel], strict=False)
        )
        body.append(
            f'<g fill="{_color(seg)}" fill-opacity="0.7"><title>'
            f"{esc(f'segment {seg}: ' + names.get(seg, ''))}</title>{dots}</g>"
        )
        ly = top + 14 + 18 * k
        body.append(
            f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" fill="{_color(seg)}"/>'
        )
        body.append(_text(left + pw + 26, ly, _short(f"{seg}: {names.get(seg, '')}", 44)))
    return svg(width, height, "".join(body), title)


def table(frame: pd.DataFrame, formats: dict[str, Callable[[Any], str]] | None = None) -> str:
    """An HTML table of ``frame`` (index dropped); text columns left-aligned, every cell escaped."""
    formats = formats or {}
    head = "".join(
        f'<th class="{"t" if frame[c].dtype == object else ""}">{esc(c)}</th>'
        for c in frame.columns
    )
    rows = []
    for rec in frame.itertuples(index=False):
        cells = []
        for c, v in zip(frame.columns, rec, strict=False):
            f = formats.get(c)
            if f is not None:
                cells.append(f"<td>{esc(f(v))}</td>")
            elif isinstance(v, str) or frame[c].dtype == object:
                cells.append(f'<td class="t">{esc(v)}</td>')
            else:
                cells.append(f"<td>{esc(num(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figure(chart: str, caption: str) -> str:
    return f"<figure>{chart}<figcaption>{esc(caption)}</figcaption></figure>"


def not_available(what: str) -> str:
    return f'<p class="na">Not available: {esc(what)}.</p>'


# ---------------------------------------------------------------------------------------------
# Numbers computed here: churn curves and the embedding map


def gain_curve(y: np.ndarray, p: np.ndarray, n_points: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gain: share of all churners among the top x share by score, at ``n_points``
    population shares from 0 to 1 (ties broken by row order)."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(y[order])])
    x = np.linspace(0.0, 1.0, n_points)
    total = cum[-1]
    gain = cum[np.rint(x * len(y)).astype(int)] / total if total > 0 else x.copy()
    return x, gain


def decile_lift(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Churn rate per score decile (highest scores first) over the overall churn rate."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
    base = y.mean() if len(y) else float("nan")
    parts = np.array_split(y[order], n_bins)
    return np.array([part.mean() / base if len(part) and base > 0 else np.nan for part in parts])


def churn_on_test_split(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, churn probabilities) of the labelled test-split subscribers, or None."""
    from gpuseg.data import load_panel

    preds_path, split_path = run_dir / "predictions.parquet", run_dir / "split.npz"
    if not (preds_path.is_file() and split_path.is_file() and (run_dir / "panel").is_dir()):
        return None
    panel = load_panel(run_dir / "panel")
    id_col = panel.meta.get("id_column", "subscriber_id")
    test = np.load(split_path, allow_pickle=False)["test"]
    preds = pd.read_parquet(preds_path, columns=[id_col, "churn_prob"])
    ids = np.asarray(panel.ids).astype(str)
    pred_ids = preds[id_col].astype(str).to_numpy()
    if len(pred_ids) == len(ids) and np.array_equal(pred_ids, ids):
        p = preds["churn_prob"].to_numpy(dtype=float)[test]
    else:
        p = preds.set_index(pred_ids)["churn_prob"].reindex(ids[test]).to_numpy(dtype=float)
    y = np.asarray(panel.churn)[test].astype(float)
    keep = (y >= 0) & np.isfinite(p)
    return y[keep], p[keep]


def embedding_map(
    run_dir: Path, sample: int, seed: int, backend: Backend
) -> tuple[np.ndarray, np.ndarray, str, int] | None:
    """2-D coordinates of a random sample of the embeddings, their segments, the method used and
    the population size; None without embeddings or segments."""
    import pyarrow.parquet as pq

    emb_path, seg_path = run_dir / "embeddings.parquet", run_dir / "segments.parquet"
    if not (emb_path.is_file() and seg_path.is_file()):
        return None
    table = pq.read_table(emb_path)
    n = table.num_rows
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, sample), replace=False))
    part = table.take(rows)
    del table
    ids = part.column(0).to_numpy(zero_copy_only=False).astype(str)
    x = np.stack([part.column(i).to_numpy() for i in range(1, part.num_columns)], 1)
    x = x.astype(np.float32)
    segs = pd.read_parquet(seg_path)
    labels = segs.set_index(segs.columns[0])["segment"]
    labels.index = labels.index.astype(str)
    lab = labels.reindex(ids).fillna(-1).to_numpy(dtype=np.int64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    est = backend.umap(n_components=2, random_state=seed)
    xy = np.asarray(backend.to_numpy(est.fit_transform(x)), dtype=float)
    mod = type(est).__module__
    method = (
        "cuML UMAP (GPU)"
        if mod.startswith("cuml")
        else "UMAP (umap-learn, CPU)"
        if mod.startswith("umap")
        else "PCA (scikit-learn, CPU; install umap-learn for a UMAP map)"
    )
    return xy, lab, method, n


# ---------------------------------------------------------------------------------------------
# Sections


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


class _Inputs:
    """Every input file of the report, read once (None when missing)."""

    def __init__(self, run_dir: Path) -> None:
        rep = run_dir / "report"
        self.run_dir = run_dir
        self.report_dir = rep
        self.segments = _read_csv(rep / "segments.csv")
        self.effects = _read_csv(rep / "effects.csv")
        self.rules = _read_csv(rep / "rules.csv")
        self.tags = _read_csv(rep / "tags.csv")
        self.value_stability = _read_csv(rep / "value_stability.csv")
        self.crosstab_value = _read_csv(rep / "crosstab_value.csv")
        self.crosstab_lifecycle = _read_csv(rep / "crosstab_lifecycle.csv")
        self.concentration = _read_json(rep / "concentration.json")
        self.quality = _read_json(rep / "quality.json")
        self.metrics = _read_json(run_dir / "metrics.json")
        self.cluster = _read_json(run_dir / "cluster.json")

    def names(self) -> dict[int, str]:
        if self.segments is None or "name" not in self.segments:
            return {}
        return {
            int(s): str(n)
            for s, n in zip(self.segments["segment"], self.segments["name"], strict=False)
        }

    def seg_labels(self) -> list[str]:
        names = self.names()
        return [f"{s}: {names.get(int(s), '')}" for s in self.segments["segment"]]


def _col(frame: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def section_summary(d: _Inputs, churn: tuple | None, cfg: RunConfig, backend: Backend) -> str:
    cards = []
    seg = d.segments
    if seg is not None:
        size = _col(seg, "size", "subscribers")
        cards.append(("subscribers", num(seg[size].sum()) if size else "n/a"))
        cards.append(("learned segments (k)", num(len(seg))))
    elif d.cluster:
        cards.append(("learned segments (k)", num(d.cluster.get("k"))))
    auc = (d.metrics or {}).get("churn", {}).get("roc_auc")
    if auc is None and churn is not None and len(np.unique(churn[0])) == 2:
        auc = roc_auc(*churn)
    cards.append(("churn ROC-AUC (test split)", num(auc)))
    if churn is not None and len(churn[0]):
        cards.append(("churn rate (test split)", pct(churn[0].mean())))
    if d.concentration:
        top = d.concentration.get("top_share", {})
        v = next((top[k] for k in ("0.2", "top_20pct") if k in top), None)
        cards.append(("revenue share of top 20%", pct(v)))
        cards.append(("Gini of revenue", num(d.concentration.get("gini"))))
    if d.quality and d.quality.get("stability_ari"):
        cards.append(("stability (mean ARI)", num(d.quality["stability_ari"].get("mean"))))
    body = "".join(
        f"<div class='card'><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in cards
    )
    algo = (d.cluster or {}).get("algorithm", "?")
    return (
        f"<div class='cards'>{body}</div><p class='small'>Run <b>{esc(cfg.name)}</b>; "
        f"clustering {esc(algo)} on {esc((d.cluster or {}).get('backend', backend.ml))}; "
        f"report rendered on {esc(backend.device)} ({esc(backend.ml)}).</p>"
    )


def section_segments(d: _Inputs) -> str:
    seg = d.segments
    if seg is None:
        return not_available("report/segments.csv")
    labels = d.seg_labels()
    chart = bar_chart(
        labels,
        [
            ("share of subscribers", seg["share"].tolist(), PALETTE[0]),
            ("share of revenue", seg["revenue_share"].tolist(), PALETTE[1]),
        ],
        title="Segment sizes and revenue share",
    )
    cols = [
        c
        for c in ("segment", "name", "size", "share", "revenue_share", "arpu", "churn_rate")
        if c in seg
    ]
    cols += [c for c in ("churn_pred", "tenure_median") if c in seg]
    fm = {c: pct for c in ("share", "revenue_share", "churn_rate", "churn_pred")}
    return figure(chart, "Share of subscribers and of revenue per learned segment.") + table(
        seg[cols], fm
    )


def section_concentration(d: _Inputs) -> str:
    c = d.concentration
    if not c:
        return not_available("report/concentration.json")
    lz = c.get("lorenz", {})
    x = lz.get("x", lz.get("population", []))
    y = lz.get("y", lz.get("revenue", []))
    chart = line_chart(
        [
            dict(name="Lorenz curve", x=x, y=y, color=PALETTE[0]),
            dict(name="equal revenue", x=[0, 1], y=[0, 1], color="#999", dash=True),
        ],
        title="Lorenz curve of revenue",
        x_label="share of subscribers (lowest revenue first)",
        y_label="share of revenue",
    )
    rows = []
    for key, v in c.get("top_share", {}).items():
        share = key if not key.startswith("top_") else str(float(key[4:-3]) / 100)
        rows.append(dict(top=f"top {float(share) * 100:g}% of subscribers", revenue_share=pct(v)))
    tab = table(pd.DataFrame(rows)) if rows else ""
    return (
        "<div class='row'>"
        + figure(chart, f"Gini coefficient {num(c.get('gini'))}: 0 all equal, 1 one holds all.")
        + f"<div><h3>Revenue held by the top subscribers</h3>{tab}</div></div>"
    )


def section_value_stability(d: _Inputs) -> str:
    vs = d.value_stability
    if vs is None:
        return not_available("report/value_stability.csv")
    levels = list(dict.fromkeys(vs["value_level"].astype(str)))[::-1]  # highest value on top
    bands = list(dict.fromkeys(vs["stability_band"].astype(str)))
    share_col = _col(vs, "revenue_share", "share_revenue")
    risk_col = _col(vs, "mean_churn_prob", "mean_churn_risk")
    cell = {(str(r.value_level), str(r.stability_band)): r for r in vs.itertuples(index=False)}
    prio = vs["priority"].to_numpy(dtype=float)
    p_lo, p_hi = np.nanmin(prio), np.nanmax(prio)
    shade = np.full((len(levels), len(bands)), np.nan)
    texts = []
    for i, lv in enumerate(levels):
        row = []
        for j, b in enumerate(bands):
            r = cell.get((lv, b))
            if r is None:
                row.append(["empty"])
                continue
            p = float(r.priority)
            shade[i, j] = 1 - (p - p_lo) / (p_hi - p_lo) if p_hi > p_lo else 0.5
            lines = [f"P{int(p)} {r.action}", f"{num(r.subscribers)} subs"]
            if share_col:
                lines.append(f"revenue {pct(getattr(r, share_col))}")
            if risk_col:
                lines.append(f"churn risk {pct(getattr(r, risk_col))}")
            row.append(lines)
        texts.append(row)
    chart = heatmap(
        [f"value {lv}" for lv in levels],
        [f"stability {b}" for b in bands],
        shade,
        texts,
        title="Value x stability matrix",
        cell_w=150,
        cell_h=66,
    )
    return figure(
        chart,
        "Each cell: operation priority (P1 first; darker = earlier) and action, subscribers, "
        "share of revenue and mean predicted churn risk.",
    )


def section_churn(churn: tuple | None) -> str:
    if churn is None:
        return not_available("predictions.parquet, split.npz or the panel's churn labels")
    y, p = churn
    if len(y) == 0 or len(np.unique(y)) < 2:
        return not_available("churn curves: the test split needs churners and stayers")
    gx, gy = gain_curve(y, p)
    lift = decile_lift(y, p)
    gain = line_chart(
        [
            dict(name="model", x=gx, y=gy, color=PALETTE[0]),
            dict(name="random", x=[0, 1], y=[0, 1], color="#999", dash=True),
        ],
        title="Cumulative gain",
        x_label="share of subscribers contacted (highest risk first)",
        y_label="share of churners reached",
    )
    lift_chart = bar_chart(
        [f"decile {i + 1}" for i in range(len(lift))],
        [("lift", lift.tolist(), PALETTE[0])],
        title="Lift per risk decile",
        fmt=lambda v: f"{float(v):.2f}x" if _finite(v) else "n/a",
        width=360,
        label_width=70,
    )
    bins = reliability_curve(y, p, 10)
    top = max([b["mean_p"] for b in bins] + [b["frac_pos"] for b in bins] + [0.05])
    lim = min(1.0, math.ceil(top * 10) / 10)
    calib = line_chart(
        [
            dict(
                name="observed",
                x=[b["mean_p"] for b in bins],
                y=[b["frac_pos"] for b in bins],
                color=PALETTE[1],
                markers=True,
            ),
            dict(name="perfect", x=[0, lim], y=[0, lim], color="#999", dash=True),
        ],
        title="Calibration curve",
        x_label="mean predicted churn probability (bin)",
        y_label="observed churn rate",
        xlim=(0, lim),
        ylim=(0, lim),
    )
    n = len(y)
    return (
        "<div class='row'>"
        + figure(
            gain,
            f"Test split: {n:,} labelled subscribers, {int(y.sum()):,} churners; "
            f"ROC-AUC {num(roc_auc(y, p))}.",
        )
        + figure(lift_chart, "Churn rate per decile of predicted risk over the overall rate.")
        + figure(calib, "Reliability: 10 equal-width probability bins; empty bins left out.")
        + "</div>"
    )


def section_map(d: _Inputs, run_dir: Path, cfg: RunConfig, backend: Backend) -> str:
    if cfg.report.map_sample <= 0:
        return not_available("map turned off (report.map_sample = 0)")
    m = embedding_map(run_dir, cfg.report.map_sample, cfg.report.seed, backend)
    if m is None:
        return not_available("embeddings.parquet or segments.parquet")
    xy, lab, method, n = m
    chart = scatter(xy, lab, d.names(), title="2-D map of the subscriber embeddings")
    return figure(
        chart,
        f"{len(xy):,} of {n:,} subscribers sampled at random (seed {cfg.report.seed}), "
        f"projected to 2-D with {method}; colour: learned segment.",
    )


def section_profiles(d: _Inputs) -> str:
    seg = d.segments
    if seg is None:
        return not_available("report/segments.csv")
    labels = d.seg_labels()
    parts = []
    if d.effects is not None and len(d.effects):
        eff = d.effects
        if "rank" in eff:
            eff = eff[eff["rank"] <= 4]
        feats = list(dict.fromkeys(eff["feature"].astype(str)))[:12]
        full = d.effects.pivot_table(index="segment", columns="feature", values="effect")
        full = full.reindex(index=seg["segment"], columns=feats)
        vals = full.to_numpy(dtype=float)
        scale = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
        texts = [[[f"{v:+.2f}" if _finite(v) else ""] for v in row] for row in vals]
        parts.append(
            figure(
                heatmap(
                    [str(s) for s in seg["segment"]],
                    feats,
                    vals / (scale or 1.0),
                    texts,
                    title="Effect sizes per segment",
                    color=div_color,
                    cell_w=96,
                    cell_h=26,
                    row_label_width=40,
                ),
                "Standardised effect size of each feature (segment vs everyone else): blue "
                "above, red below the population; the features that most set segments apart.",
            )
        )
    else:
        parts.append(not_available("report/effects.csv"))
    row = []
    if "churn_rate" in seg:
        series = [("actual", seg["churn_rate"].tolist(), PALETTE[3])]
        if "churn_pred" in seg:
            series.append(("predicted", seg["churn_pred"].tolist(), PALETTE[7]))
        err = (
            {"actual": (seg["churn_rate_lo"].tolist(), seg["churn_rate_hi"].tolist())}
            if {"churn_rate_lo", "churn_rate_hi"} <= set(seg.columns)
            else None
        )
        row.append(
            figure(
                bar_chart(labels, series, title="Churn per segment", errors=err, width=700),
                "Churn rate (actual, with 95% interval) and mean predicted churn probability.",
            )
        )
    if "arpu" in seg:
        err = (
            {"ARPU": (seg["arpu_lo"].tolist(), seg["arpu_hi"].tolist())}
            if {"arpu_lo", "arpu_hi"} <= set(seg.columns)
            else None
        )
        row.append(
            figure(
                bar_chart(
                    labels,
                    [("ARPU", seg["arpu"].tolist(), PALETTE[2])],
                    title="ARPU per segment",
                    fmt=lambda v: num(v, 4),
                    errors=err,
                    width=700,
                ),
                "Mean revenue per user per month, with 95% interval.",
            )
        )
    parts.append("<div class='row'>" + "".join(row) + "</div>")
    for prefix, what in (
        ("migration_", "Value migration mix"),
        ("contract_", "Contract mix"),
        ("bundle_", "Bundle mix"),
    ):
        cols = [c for c in seg.columns if c.startswith(prefix) and not c.endswith(("_lo", "_hi"))]
        if cols:
            parts.append(
                figure(
                    stacked_bars(
                        labels,
                        [(c[len(prefix) :], seg[c].tolist()) for c in cols],
                        title=what,
                        width=760,
                    ),
                    f"{what} per segment.",
                )
            )
    med = [c for c in seg.columns if c.startswith("median_")]
    if med:
        frame = seg[["segment"] + med].rename(columns={c: c[7:] for c in med})
        parts.append("<h3>Usage medians (per period)</h3>" + table(frame))
    return "".join(parts)


def section_tags(d: _Inputs) -> str:
    t = d.tags
    if t is None:
        return not_available("report/tags.csv")
    kinds = list(dict.fromkeys(t["kind"].astype(str)))
    blocks = []
    for k, kind in enumerate(kinds):
        sub = t[t["kind"].astype(str) == kind]
        blocks.append(
            figure(
                bar_chart(
                    sub["tag"].astype(str).tolist(),
                    [(kind, sub["share"].tolist(), _color(k))],
                    title=f"{kind} tags",
                    width=520,
                    label_width=190,
                ),
                f"{kind.capitalize()} tags: share of subscribers carrying each.",
            )
        )
    return (
        "<div class='row'>"
        + "".join(blocks)
        + "</div>"
        + table(t[["tag", "kind", "subscribers", "share"]], {"share": pct})
    )


def section_rules(d: _Inputs) -> str:
    r = d.rules
    if r is None:
        return not_available("report/rules.csv")
    names = d.names()
    frame = r.copy()
    frame.insert(1, "name", [names.get(int(s), "") for s in frame["segment"]])
    fid = frame["fidelity"].iloc[0] if "fidelity" in frame and len(frame) else float("nan")
    cols = [c for c in ("segment", "name", "rule", "precision", "recall") if c in frame]
    info = (d.quality or {}).get("rules", {})
    extra = (
        f" Tree of depth {info['max_depth']}, fitted on {num(info.get('fitted_on'))} and "
        f"scored on {num(info.get('scored_on'))} subscribers."
        if info.get("max_depth")
        else ""
    )
    return (
        f"<p>A decision tree over plain columns recognises the segments with fidelity "
        f"<b>{esc(pct(fid))}</b> (accuracy on all subscribers).{esc(extra)} A CRM can apply "
        f"these rules without the model.</p>"
        + table(frame[cols], {"precision": pct, "recall": pct})
    )


def section_quality(d: _Inputs) -> str:
    q = d.quality or {}
    scores = q.get("k_scores") or (d.cluster or {}).get("scores") or []
    if not scores:
        return not_available("report/quality.json and cluster.json scores")
    ks = [s["k"] for s in scores]
    chosen = q.get("chosen_k", (d.cluster or {}).get("k"))
    charts = []
    for key, name, color in (
        ("silhouette", "silhouette (higher is better)", PALETTE[0]),
        ("davies_bouldin", "Davies-Bouldin (lower is better)", PALETTE[1]),
    ):
        vals = [s.get(key) for s in scores]
        good = [float(v) for v in vals if _finite(v)]
        if not good:
            continue
        lo, hi = min(good), max(good)
        pad = (hi - lo) * 0.2 or 0.05
        series = [dict(name=name, x=ks, y=vals, color=color, markers=True)]
        if chosen in ks:
            series.append(
                dict(
                    name=f"chosen k={chosen}",
                    x=[chosen, chosen],
                    y=[lo - pad, hi + pad],
                    color="#999",
                    dash=True,
                )
            )
        charts.append(
            line_chart(
                series,
                title=name,
                x_label="k",
                y_label=key.replace("_", "-"),
                xlim=(min(ks), max(ks)),
                ylim=(lo - pad, hi + pad),
                fmt_x=lambda v: f"{v:g}",
                fmt_y=lambda v: f"{v:.3f}",
                ticks=max(1, min(5, max(ks) - min(ks))),
                width=380,
                height=260,
            )
        )
    parts = ["<div class='row'>" + "".join(figure(c, "") for c in charts) + "</div>"]
    reason = q.get("reason", (d.cluster or {}).get("reason"))
    if reason:
        parts.append(f"<p><b>Chosen k:</b> {esc(reason)}</p>")
    ari = q.get("stability_ari") or {}
    if ari.get("values"):
        parts.append(
            f"<p><b>Stability:</b> adjusted Rand index of re-fits on bootstrap samples against the "
            f"chosen segmentation: mean {esc(num(ari.get('mean')))}, min "
            f"{esc(num(ari.get('min')))} over {len(ari['values'])} re-fits.</p>"
        )
    differ = q.get("segments_differ") or {}
    tests = []
    for key, what in (("churn_chi2", "churn rate (chi-squared)"), ("arpu_anova", "ARPU (ANOVA)")):
        t = differ.get(key)
        if t:
            tests.append(
                f"{what}: statistic {num(t.get('statistic'))}, p = {t.get('p_value'):.3g}"
                if _finite(t.get("p_value"))
                else f"{what}: n/a"
            )
    if tests:
        parts.append("<p><b>Do segments behave differently?</b> " + esc("; ".join(tests)) + ".</p>")
    return "".join(parts)


def _crosstab(frame: pd.DataFrame | None, what: str, names: dict[int, str]) -> str:
    if frame is None:
        return not_available(f"report/crosstab_{what}.csv")
    cols = [c for c in frame.columns if c != "segment"]
    vals = frame[cols].to_numpy(dtype=float)
    rows_total = vals.sum(1, keepdims=True)
    share = np.divide(vals, rows_total, out=np.zeros_like(vals), where=rows_total > 0)
    texts = [
        [[num(v), pct(s, 0)] for v, s in zip(vr, sr, strict=False)]
        for vr, sr in zip(vals, share, strict=False)
    ]
    rows = [f"{s}: {names.get(int(s), '')}" for s in frame["segment"]]
    return figure(
        heatmap(
            rows,
            cols,
            share,
            texts,
            title=f"Segments x {what}",
            cell_w=106,
            cell_h=34,
            row_label_width=230,
        ),
        f"Subscribers per learned segment and {what} (share of the segment's row; darker: more).",
    )


def section_crosstabs(d: _Inputs) -> str:
    names = d.names()
    return (
        "<h3>Learned segments x value level</h3>"
        + _crosstab(d.crosstab_value, "value", names)
        + "<h3>Learned segments x lifecycle stage</h3>"
        + _crosstab(d.crosstab_lifecycle, "lifecycle", names)
    )


def section_notes(d: _Inputs, backend: Backend) -> str:
    notes = list((d.quality or {}).get("notes") or []) + list(backend.notes)
    items = "".join(f"<li>{esc(n)}</li>" for n in notes) or "<li>No notes.</li>"
    files = sorted(
        p.name
        for p in d.report_dir.glob("*")
        if p.is_file() and p.suffix in (".csv", ".md", ".json", ".parquet")
    )
    links = ", ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in files)
    return (
        f"<ul>{items}</ul><p class='small'>Tables beside this file (Markdown, CSV, Parquet): "
        f"{links or 'none'}. The page holds aggregates only, no subscriber IDs.</p>"
    )


# ---------------------------------------------------------------------------------------------
# Entry point


def render_html(run_dir: str | Path, cfg: RunConfig, backend: Backend) -> str:
    """The report page as a string (see :func:`render_report`)."""
    run_dir = Path(run_dir)
    d = _Inputs(run_dir)
    churn = churn_on_test_split(run_dir)
    makers: dict[str, Callable[[], str]] = {
        "summary": lambda: section_summary(d, churn, cfg, backend),
        "segments": lambda: section_segments(d),
        "concentration": lambda: section_concentration(d),
        "value-stability": lambda: section_value_stability(d),
        "churn": lambda: section_churn(churn),
        "map": lambda: section_map(d, run_dir, cfg, backend),
        "profiles": lambda: section_profiles(d),
        "tags": lambda: section_tags(d),
        "rules": lambda: section_rules(d),
        "quality": lambda: section_quality(d),
        "crosstabs": lambda: section_crosstabs(d),
        "notes": lambda: section_notes(d, backend),
    }
    bodies = {}
    for sid, make in makers.items():
        try:
            bodies[sid] = make()
        except KeyError as exc:  # a report file of an older layout: say which column is missing
            bodies[sid] = not_available(f"column {exc} missing from this run's report files")
    nav = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{esc(h)}</h2>{bodies[sid]}</section>' for sid, h in SECTIONS
    )
    from gpuseg.action.html_section import plan_section  # the plan, once `gpuseg plan` ran

    plan_nav, plan_html = plan_section(run_dir)
    nav, sections = nav + plan_nav, sections + plan_html
    title = f"gpuseg report: {cfg.name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main><header><h1>{esc(title)}</h1>"
        "<p class='small'>Subscriber segments, value, churn risk and tags. Self-contained: "
        "no network needed to view or print.</p></header>"
        f"<nav>{nav}</nav>{sections}</main></body></html>\n"
    )


def render_report(run_dir: str | Path, cfg: RunConfig, backend: Backend | None = None) -> Path:
    """Write ``run_dir/report/report.html`` (one self-contained file) and return its path."""
    backend = backend or resolve_backend(cfg.device)
    run_dir = Path(run_dir)
    return write_text_atomic(run_dir / "report" / "report.html", render_html(run_dir, cfg, backend))


__all__ = [
    "SECTIONS",
    "render_report",
    "render_html",
    "gain_curve",
    "decile_lift",
    "churn_on_test_split",
    "embedding_map",
]
