"""A small SVG chart library: bars, stacked bars, lines, heatmaps, scatter, tables; text escaped."""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

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


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def is_finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def pct(v: Any, digits: int = 1) -> str:
    return f"{float(v) * 100:.{digits}f}%" if is_finite(v) else "n/a"


def num(v: Any, digits: int = 3) -> str:
    if not is_finite(v):
        return "n/a"
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def _short(text: Any, n: int = 46) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def wrap(text: Any, n: int, max_lines: int = 3) -> list[str]:
    """``text`` in lines of at most ``n`` characters (words kept whole where they fit); only a
    text longer than ``max_lines`` lines is cut, with an ellipsis on its last line."""
    lines = textwrap.wrap(str(text), max(n, 4), break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [_short(" ".join(lines[max_lines - 1 :]), n)]
    return lines


def _label(
    x: float, y: float, text: Any, n: int, anchor: str = "end", max_lines: int = 3, step: int = 12
) -> str:
    """A label wrapped onto lines of ``n`` characters, centred on the baseline ``y`` of a one-line
    label; the whole text is its tooltip."""
    lines = wrap(text, n, max_lines)
    y0 = y - step * (len(lines) - 1) / 2
    spans = "".join(
        f'<tspan x="{x:.1f}" y="{y0 + k * step:.1f}">{esc(line)}</tspan>'
        for k, line in enumerate(lines)
    )
    return f'<text text-anchor="{anchor}"><title>{esc(text)}</title>{spans}</text>'


def pval(p: Any) -> str:
    """A p-value as people read it: ``p < 0.001`` below that, else three decimals."""
    if not is_finite(p):
        return "p n/a"
    return "p < 0.001" if float(p) < 0.001 else f"p = {float(p):.3f}"


# table headers in words, with units (other columns: snake_case -> words)
HEADERS = {
    "size": "subscribers",
    "share": "share of subscribers",
    "revenue_share": "share of revenue",
    "arpu": "ARPU (per month)",
    "churn_rate": "churn rate",
    "churn_pred": "predicted churn",
    "tenure_median": "median tenure (months)",
    "precision": "precision",
    "recall": "recall (of the segment)",
    "top": "subscribers",
}


def header(column: Any) -> str:
    return HEADERS.get(str(column), str(column).replace("_", " "))


def frame_bounds(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scatter frame: the 0.5 and 99.5 percentiles of each axis."""
    return np.nanpercentile(xy, 0.5, axis=0), np.nanpercentile(xy, 99.5, axis=0)


def outside_frame(xy: np.ndarray) -> int:
    """Points of ``xy`` beyond :func:`frame_bounds`, which :func:`scatter` draws on its edge."""
    lo, hi = frame_bounds(xy)
    return int(((xy < lo) | (xy > hi)).any(axis=1).sum())


def color_at(i: int) -> str:
    return PALETTE[int(i) % len(PALETTE)]


def _mix(c0: tuple[int, int, int], c1: tuple[int, int, int], t: float) -> str:
    t = min(max(float(t), 0.0), 1.0) if is_finite(t) else 0.0
    r, g, b = (round(a + (b_ - a) * t) for a, b_ in zip(c0, c1, strict=False))
    return f"#{r:02x}{g:02x}{b:02x}"


def seq_color(t: float) -> str:
    """White to blue for t in [0, 1]."""
    return _mix((255, 255, 255), (44, 98, 160), t)


def div_color(t: float) -> str:
    """Red (t=-1) to white (0) to blue (+1)."""
    if not is_finite(t):
        return "#eeeeee"
    return _mix((255, 255, 255), (200, 60, 60), -t) if t < 0 else seq_color(t)


def _ink_on(t: float) -> str:
    return "#fff" if is_finite(t) and abs(t) > 0.6 else INK


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
    chars = int(label_width // 6.2)
    n_lines = max((len(wrap(lb, chars, 2)) for lb in labels), default=1)
    group_h = max(bar_h * len(series) + gap, 12 * n_lines + gap)
    top = 24 if len(series) > 1 else 8
    plot_w = width - label_width - 70
    vals = [float(v) for _, vs, _ in series for v in vs if is_finite(v)]
    vals += [float(v) for lo_hi in errors.values() for v in lo_hi[1] if is_finite(v)]
    vmax = max(vals + [0.0]) or 1.0
    height = top + group_h * len(labels) + 20
    body = []
    if len(series) > 1:
        body.append(_legend([(n, c) for n, _, c in series], label_width, 14))
    x0 = label_width
    for i, label in enumerate(labels):
        gy = top + i * group_h
        body.append(_label(x0 - 6, gy + group_h / 2, label, chars, "end", max_lines=2))
        for j, (name, vs, color) in enumerate(series):
            v = vs[i]
            y = gy + j * bar_h
            w = plot_w * float(v) / vmax if is_finite(v) and float(v) > 0 else 0.0
            body.append(
                f'<rect x="{x0}" y="{y:.1f}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}">'
                f"<title>{esc(f'{label}, {name}: {fmt(v)}')}</title></rect>"
            )
            end = w
            if name in errors:
                lo, hi = errors[name][0][i], errors[name][1][i]
                if is_finite(lo) and is_finite(hi):
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
    chars = int(label_width // 6.2)
    row_h = max(bar_h + 6, 12 * max((len(wrap(lb, chars, 2)) for lb in labels), default=1) + 4)
    height = top + row_h * len(labels) + 8
    body = [_legend([(n, color_at(k)) for k, (n, _) in enumerate(parts)], label_width, 14)]
    for i, label in enumerate(labels):
        y = top + i * row_h + (row_h - bar_h - 6) / 2
        body.append(_label(label_width - 6, y + bar_h - 4, label, chars, "end", max_lines=2))
        total = sum(float(vs[i]) for _, vs in parts if is_finite(vs[i])) or 1.0
        x = float(label_width)
        for k, (name, vs) in enumerate(parts):
            share = float(vs[i]) / total if is_finite(vs[i]) else 0.0
            w = plot_w * share
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color_at(k)}">'
                f"<title>{esc(f'{label}, {name}: {pct(share)}')}</title></rect>"
            )
            if w > 34:
                body.append(_text(x + w / 2, y + bar_h - 4, pct(share, 0), "middle", fill="#fff"))
            x += w
    return svg(width, height, "".join(body), title)


def diagonal(name: str, lim: float = 1.0) -> dict:
    """The dashed grey reference line y = x from 0 to ``lim`` (random targeting, equal shares,
    perfect calibration), as a :func:`line_chart` series."""
    return dict(name=name, x=[0, lim], y=[0, lim], color="#999", dash=True)


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
            if is_finite(x) and is_finite(y)
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


def curve_chart(
    name: str, x: Sequence[float], y: Sequence[float], reference: str, **labels: str
) -> str:
    """One curve (the first palette colour) over [0, 1]^2 against the dashed diagonal named
    ``reference``; ``labels``: title, x_label, y_label of :func:`line_chart`."""
    return line_chart([dict(name=name, x=x, y=y, color=PALETTE[0]), diagonal(reference)], **labels)


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
    col_chars = max(cell_w // 6, 4)
    col_lines = max((len(wrap(c, col_chars, 5)) for c in cols), default=1)
    top = 10 + 12 * col_lines
    width = row_label_width + cell_w * len(cols) + 4
    height = top + cell_h * len(rows) + 4
    row_lines = max(1, (cell_h - 2) // 12)
    body = []
    for j, c in enumerate(cols):
        lines = wrap(c, col_chars, 5)
        y = top - 7 - 12 * (len(lines) - 1) / 2
        body.append(_label(row_label_width + cell_w * (j + 0.5), y, c, col_chars, "middle", 5))
    for i, r in enumerate(rows):
        y = top + i * cell_h
        body.append(
            _label(
                row_label_width - 6, y + cell_h / 2 + 4, r, row_label_width // 6, "end", row_lines
            )
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
    lo, hi = frame_bounds(xy)
    span = np.where(hi > lo, hi - lo, 1.0)
    z = np.clip((xy - lo) / span, 0, 1)
    px = left + z[:, 0] * pw
    py = top + (1 - z[:, 1]) * ph
    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="{GRID}"/>']
    ly = top + 14
    for seg in sorted(np.unique(labels).tolist()):
        sel = labels == seg
        dots = "".join(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.7"/>'
            for a, b in zip(px[sel], py[sel], strict=False)
        )
        body.append(
            f'<g fill="{color_at(seg)}" fill-opacity="0.7"><title>'
            f"{esc(f'segment {seg}: ' + names.get(seg, ''))}</title>{dots}</g>"
        )
        name = f"{seg}: {names.get(seg, '')}"
        lines = wrap(name, 44, 2)
        body.append(
            f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" '
            f'fill="{color_at(seg)}"/>'
        )
        body.append(_label(left + pw + 26, ly + 6 * (len(lines) - 1), name, 44, "start", 2))
        ly += 6 + 12 * len(lines)
    return svg(width, height, "".join(body), title)


def table(frame: pd.DataFrame, formats: dict[str, Callable[[Any], str]] | None = None) -> str:
    """An HTML table of ``frame`` (index dropped); text columns left-aligned, every cell escaped;
    headers in words with units (:func:`header`)."""
    formats = formats or {}
    head = "".join(
        f'<th class="{"t" if frame[c].dtype == object else ""}">{esc(header(c))}</th>'
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
