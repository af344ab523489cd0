"""The package layout: the layer contract holds; no private name crosses a module."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "gpuseg").rglob("*.py"))


def test_layer_contract_holds():
    """``lint-imports`` with the layers contract of pyproject.toml (README: Layout)."""
    pytest.importorskip("importlinter")
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    r = subprocess.run(
        [*cmd, "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def private_uses(path: Path) -> list[str]:
    """``from gpuseg.x import _y`` and ``mod._y`` where ``mod`` is an imported gpuseg module."""
    tree = ast.parse(path.read_text())
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gpuseg"):
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} imports {a.name}")
                elif node.module == "gpuseg" or a.name[:1].islower():
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("gpuseg"):
                    modules.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    found = [u for p in SOURCES for u in private_uses(p)]
    assert found == []


def test_the_private_name_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from gpuseg.io.store import _x\nfrom gpuseg.segment import classic\nclassic._y\n"
    )
    assert len(private_uses(bad)) == 2


# Imports that may stay inside a function: optional or heavy dependencies (anywhere), and in the
# CLI the stage modules and torch, imported after the config is validated so that a config error
# comes back before they load (README: Layout).
LAZY_ANYWHERE = (
    "cudf",
    "cuml",
    "cupy",
    "dask",
    "distributed",
    "dask_cuda",
    "xgboost",
    "lightgbm",
    "umap",
)
LAZY_IN_CLI = ("torch", "gpuseg.")
EAGER_IN_CLI = ("gpuseg.config", "gpuseg.errors")


def local_imports(path: Path) -> list[str]:
    """Imports inside a function body that the allow-lists above do not cover."""
    tree = ast.parse(path.read_text())
    cli = path.name == "cli.py" and path.parent.name == "gpuseg"
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.split(".")[0] in LAZY_ANYWHERE:
                    continue
                if cli and name.startswith(LAZY_IN_CLI) and not name.startswith(EAGER_IN_CLI):
                    continue
                found.append(f"{path.name}:{node.lineno} imports {name}")
    return sorted(set(found))


def test_no_function_local_imports_but_optional_ones():
    found = [u for p in SOURCES for u in local_imports(p)]
    assert found == []


def test_the_local_import_check_can_fail(tmp_path):
    code = (
        "import torch\ndef f():\n    import json\n    import cudf\n"
        "    from gpuseg.config import x\n    from gpuseg.pipeline import stages\n"
    )
    (tmp_path / "gpuseg").mkdir()
    cli, other = tmp_path / "gpuseg" / "cli.py", tmp_path / "gpuseg" / "other.py"
    cli.write_text(code)
    other.write_text(code)
    assert sorted(f.split(" imports ")[1] for f in local_imports(cli)) == ["gpuseg.config", "json"]
    assert sorted(f.split(" imports ")[1] for f in local_imports(other)) == [
        "gpuseg.config",
        "gpuseg.pipeline",
        "json",
    ]
