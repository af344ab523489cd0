"""The self-contained HTML report: structure without a browser, then a real headless Chromium.

The browser test drives Chromium through the DevTools protocol over ``--remote-debugging-pipe``
(file descriptors 3 and 4, NUL-terminated JSON; standard library only): it collects console
messages, uncaught exceptions and log entries (failed loads) while the file:// page loads, checks
that every section is laid out, and takes a full-page screenshot. Without a Chromium on PATH it
skips, saying so.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gpuseg.backend import resolve_backend
from gpuseg.config import load_config
from gpuseg.pipeline.stages import run_pipeline
from gpuseg.report.figures import decile_lift, gain_curve
from gpuseg.report.html.page import SECTIONS, render_report

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """The tiny pipeline (configs/tiny.yaml, CPU) in a temporary run directory, with its
    report directory, and the HTML rendered from it."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("html_run")
    cfg = replace(load_config(ROOT / "configs" / "tiny.yaml"), out_dir=str(out))
    backend = resolve_backend("cpu")
    run_pipeline(cfg, backend, overwrite=True)
    path = render_report(out, cfg, backend)
    return cfg, out, path


# ---------------------------------------------------------------------------------------------
# Without a browser


class _Checker(HTMLParser):
    """Collects ids, resource URLs and tag nesting errors (void elements excepted)."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "circle", "rect", "path", "line"}

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.urls: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("src", "href", "xlink:href", "data", "srcset", "poster"):
            if a.get(key):
                self.urls.append(a[key])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        for key in ("src", "href", "xlink:href"):
            if a.get(key):
                self.urls.append(a[key])

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()


def _parse(text: str) -> _Checker:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    return checker


def test_html_is_well_formed_with_every_section(run):
    _, _, path = run
    text = path.read_text()
    checker = _parse(text)
    assert checker.errors == []
    assert checker.stack == []
    assert text.startswith("<!DOCTYPE html>")
    for sid, _heading in SECTIONS:
        assert sid in checker.ids, sid
        block = re.search(rf'<section id="{sid}"><h2>(.*?)</h2>(.*?)</section>', text, re.S)
        assert block and block.group(1), sid
        # on a full run every input file exists: no section falls back to "not available"
        assert "Not available" not in block.group(2), sid
    assert checker.ids.count("summary") == 1
    assert text.count("<svg") >= 10


def test_html_is_self_contained(run):
    _, out, path = run
    text = path.read_text()
    checker = _parse(text)
    assert not re.search(r"https?://", text)
    assert not re.search(r"@import|url\(", text)
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(checker.tags)
    # the only links are the section anchors and the tables beside the file
    for url in checker.urls:
        assert url.startswith("#") or (out / "report" / url).is_file(), url


def test_html_holds_no_subscriber_ids(run):
    _, out, path = run
    text = path.read_text()
    ids = pd.read_parquet(out / "predictions.parquet").iloc[:, 0].astype(str)
    assert len(ids) == 1200
    leaked = [i for i in ids if i in text]
    assert leaked == []


def test_html_figures_match_the_report_files(run):
    cfg, out, path = run
    text = path.read_text()
    conc = json.loads((out / "report" / "concentration.json").read_text())
    assert f"{conc['top_share']['0.2'] * 100:.1f}%" in text
    seg = pd.read_csv(out / "report" / "segments.csv")
    for name in seg["name"]:
        assert _escaped(name) in text
    # the map caption names the method and the sample size
    assert "PCA (scikit-learn" in text or "UMAP" in text
    assert f"{min(cfg.report.map_sample, 1200):,} of 1,200 subscribers" in text


def _escaped(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def test_missing_inputs_give_not_available_notes(run, tmp_path):
    cfg, out, _ = run
    # a run directory with only the segment table: every other section says what is missing
    (tmp_path / "report").mkdir()
    shutil.copy(out / "report" / "segments.csv", tmp_path / "report" / "segments.csv")
    path = render_report(tmp_path, cfg, resolve_backend("cpu"))
    text = path.read_text()
    assert _parse(text).errors == []
    for sid in ("concentration", "value-stability", "churn", "map", "tags", "rules"):
        block = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S).group(1)
        assert "Not available" in block, sid
    assert "Not available" not in re.search(
        r'<section id="segments">(.*?)</section>', text, re.S
    ).group(1)


def test_text_is_escaped(run, tmp_path):
    cfg, out, _ = run
    shutil.copytree(out / "report", tmp_path / "report")
    seg = pd.read_csv(tmp_path / "report" / "segments.csv")
    seg.loc[0, "name"] = "<script>alert(1)</script> & co"
    seg.to_csv(tmp_path / "report" / "segments.csv", index=False)
    text = render_report(tmp_path, cfg, resolve_backend("cpu")).read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text


def test_gain_and_lift():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.linspace(1, 0, 10)  # the two churners have the highest scores
    x, g = gain_curve(y, p, n_points=11)
    assert g[0] == 0 and g[-1] == 1
    assert g[2] == pytest.approx(1.0)  # top 20% reaches every churner
    assert np.all(np.diff(g) >= 0)
    lift = decile_lift(y, p)
    assert lift[0] == pytest.approx(5.0) and lift[1] == pytest.approx(5.0)
    assert np.all(lift[2:] == 0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    x, g = gain_curve(y, rng.random(5000), n_points=11)
    assert np.abs(g - x).max() < 0.05  # a random score follows the diagonal


# ---------------------------------------------------------------------------------------------
# Real headless Chromium over the DevTools protocol


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class DevTools:
    """A minimal DevTools protocol client over --remote-debugging-pipe (standard library only)."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900, log: Path | None = None):
        self.log = log
        # the child's ends are moved to fds >= 10, so the shell's 3<&N 4>&M cannot clobber them
        to_child_r, self.to_browser = os.pipe()
        self.from_browser, from_child_w = os.pipe()
        self.to_child_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        self.from_child_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        args = [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # the child reads commands on fd 3 and writes replies on fd 4 (bash: dash refuses fds >= 10)
        shell = f'exec "$0" "$@" 3<&{self.to_child_r} 4>&{self.from_child_w}'
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "bash", "-c", shell, *args],
            pass_fds=(self.to_child_r, self.from_child_w),
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb") if log else subprocess.DEVNULL,  # noqa: SIM115
        )
        os.close(self.to_child_r)
        os.close(self.from_child_w)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log else ""
                raise RuntimeError(f"Chromium closed the DevTools pipe; its stderr ends:\n{tail}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            e = self._read_message(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=10)
        for fd in (self.to_browser, self.from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load_in_chromium(path: Path, width: int = 1280, log: Path | None = None) -> dict:
    """Open ``path`` in headless Chromium; returns console errors, exceptions, failed log
    entries, every section's laid-out box, the page size and a full-page PNG screenshot."""
    binary = _browser()
    tools = DevTools(binary, width, log=log)
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            tools.send(f"{domain}.enable", session=session)
        tools.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        tools.wait_for("Page.loadEventFired")
        tools.send("Runtime.evaluate", {"expression": "1"}, session=session)  # flush events
        boxes = tools.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify([...document.querySelectorAll('section')].map("
                "s => {const r = s.getBoundingClientRect(); return {id: s.id, top: r.top + "
                "window.scrollY, height: r.height, width: r.width}}))",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        metrics = tools.send("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = tools.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": dict(x=0, y=0, width=size["width"], height=size["height"], scale=1),
            },
            session=session,
        )
        events = list(tools.events)
    finally:
        tools.close()
    console = [
        e["params"]
        for e in events
        if e.get("method") == "Runtime.consoleAPICalled"
        and e["params"]["type"] in ("error", "assert", "warning")
    ]
    exceptions = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    log_errors = [
        e["params"]["entry"]
        for e in events
        if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
    ]
    return dict(
        console=console,
        exceptions=exceptions,
        log_errors=log_errors,
        sections=json.loads(boxes),
        size=size,
        png=base64.b64decode(shot["data"]),
    )


needs_browser = pytest.mark.skipif(
    _browser() is None,
    reason="no Chromium on PATH (chromium, chromium-browser or google-chrome); "
    "install Debian's `chromium` (scripts/dev.sh does when it can) to run the browser test",
)


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


@needs_browser
def test_report_renders_in_headless_chromium(run, tmp_path):
    _, _, path = run
    r = load_in_chromium(path, log=tmp_path / "chromium.log")
    assert r["console"] == [], r["console"]
    assert r["exceptions"] == [], r["exceptions"]
    assert r["log_errors"] == [], r["log_errors"]
    # every section is laid out, in page order, inside the page the screenshot covers
    ids = [s["id"] for s in r["sections"]]
    assert ids == [sid for sid, _ in SECTIONS]
    height = r["size"]["height"]
    for s in r["sections"]:
        assert s["height"] > 40 and s["width"] > 600, s
        assert s["top"] >= 0 and s["top"] + s["height"] <= height + 1, s
    img = _image(r["png"])
    assert img.size[0] >= 1200 and abs(img.size[1] - height) <= 2
    # non-blank, in every section's band: more than one colour, some ink
    arr = np.asarray(img)
    for s in r["sections"]:
        band = arr[int(s["top"]) : int(s["top"] + s["height"])]
        packed = band[::2, ::2].astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
        assert len(np.unique(packed)) > 3, s["id"]
        assert (band.min(axis=2) < 128).mean() > 0.002, s["id"]
    out = Path(os.environ.get("GPUSEG_SCREENSHOT_DIR", tmp_path))
    (out / "report.png").write_bytes(r["png"])


@needs_browser
def test_chromium_check_catches_errors(tmp_path):
    """The browser check is not blind: a page with a script error, a console error and a
    missing image fails each of its three lists."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><section id='x'><h2>x</h2></section>"
        "<img src='missing.png'><script>console.error('boom'); undefined_fn();</script>"
        "</body></html>"
    )
    r = load_in_chromium(page, width=800)
    assert any("boom" in str(c) for c in r["console"])
    assert r["exceptions"]
    assert any("missing.png" in str(e) or "ERR_FILE_NOT_FOUND" in str(e) for e in r["log_errors"])


def test_cli_report_writes_the_html(run):
    from typer.testing import CliRunner

    from gpuseg.cli import app

    _, out, path = run
    path.unlink()
    result = CliRunner().invoke(
        app, ["report", "-c", str(out / "config.yaml"), "--device", "cpu"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert path.is_file() and "report.html" in result.output
    assert 'id="notes"' in path.read_text()


def test_map_sample_is_honoured(run, tmp_path):
    cfg, out, _ = run
    for name in ("report", "embeddings.parquet", "segments.parquet"):
        src = out / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    small = replace(cfg, report=replace(cfg.report, map_sample=300))
    text = render_report(tmp_path, small, resolve_backend("cpu")).read_text()
    block = re.search(r'<section id="map">(.*?)</section>', text, re.S).group(1)
    assert "300 of 1,200 subscribers" in block
    assert block.count("<circle") == 300
    off = replace(cfg, report=replace(cfg.report, map_sample=0))
    text = render_report(tmp_path, off, resolve_backend("cpu")).read_text()
    assert "map turned off" in re.search(r'<section id="map">(.*?)</section>', text, re.S).group(1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.is_available() is False")
def test_map_uses_cuml_umap_on_gpu(run, tmp_path):
    """On a RAPIDS machine the map is cuML UMAP (skips without CUDA or cuML)."""
    pytest.importorskip("cuml")
    cfg, out, _ = run
    for name in ("report", "embeddings.parquet", "segments.parquet"):
        src = out / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    text = render_report(tmp_path, cfg, resolve_backend("cuda")).read_text()
    assert "cuML UMAP (GPU)" in text
    assert (
        re.search(r'<section id="map">(.*?)</section>', text, re.S).group(1).count("<circle")
        == 1200
    )


def test_a_table_without_a_contract_column_is_named(run, tmp_path):
    cfg, out, _ = run
    shutil.copytree(out / "report", tmp_path / "report")
    vs = pd.read_csv(tmp_path / "report" / "value_stability.csv").drop(columns="priority")
    vs.to_csv(tmp_path / "report" / "value_stability.csv", index=False)
    text = render_report(tmp_path, cfg, resolve_backend("cpu")).read_text()
    block = re.search(r'<section id="value-stability">(.*?)</section>', text, re.S).group(1)
    assert "Not available" in block and "priority" in block


def test_report_as_a_marketing_analyst_reads_it(run, tmp_path):
    """Issue 14: every segment's top features in the heatmap (more than 12), rows named; rule
    recall beside fidelity, weak rules named; clamped map points said; long names wrapped, not
    cut; headers in words with units; p < 0.001; the CSV links' limits said."""
    cfg, out, _ = run
    shutil.copytree(out, tmp_path / "r", dirs_exist_ok=True)
    rep = tmp_path / "r" / "report"
    eff = pd.read_csv(rep / "effects.csv")
    segs = sorted(eff["segment"].unique())
    extra = pd.DataFrame(
        [  # 16 more features, each the top one of some segment
            dict(segment=s, feature=f"feature_{j}", effect=3.0 + j / 10, rank=0)
            for j in range(16)
            for s in [segs[j % len(segs)]]
        ]
    )
    pd.concat([eff, extra]).to_csv(rep / "effects.csv", index=False)
    seg = pd.read_csv(rep / "segments.csv")
    long = "High roaming, high social circle, 13-24m contract, dropped calls, low risk"
    seg.loc[0, "name"] = long
    seg.to_csv(rep / "segments.csv", index=False)
    rules = pd.read_csv(rep / "rules.csv")
    rules.loc[0, "recall"] = 0.086
    rules.to_csv(rep / "rules.csv", index=False)
    quality = json.loads((rep / "quality.json").read_text())
    quality.setdefault("segments_differ", {})["churn_chi2"] = dict(statistic=99.0, p_value=0.0)
    (rep / "quality.json").write_text(json.dumps(quality))
    text = render_report(tmp_path / "r", cfg, resolve_backend("cpu")).read_text()
    profiles = re.search(r'<section id="profiles">(.*?)</section>', text, re.S).group(1)
    assert "feature_15" in profiles and "dropped" in profiles  # past the old 12-feature cap
    assert f"<title>0: {long}</title>" in profiles  # segments named, whole name kept
    spans = re.findall(r"<tspan[^>]*>([^<]*)</tspan>", profiles)
    assert "…" not in "".join(spans)  # wrapped onto lines, not cut
    words = set(" ".join(spans).replace(",", " ").split())
    assert set(long.replace(",", " ").split()) <= words  # every word of the name is shown
    rules_html = re.search(r'<section id="rules">(.*?)</section>', text, re.S).group(1)
    assert "recall" in rules_html and "8.6%" in rules_html and "misses most" in rules_html
    assert "p &lt; 0.001" in text and "p = 0 " not in text and "p = 0;" not in text
    assert "drawn on its edge" in text or "outlying" not in text
    assert "share of revenue</th>" in text and "ARPU (per month)</th>" in text
    assert "revenue_share</th>" not in text
    assert "a page shared on its own" in text
