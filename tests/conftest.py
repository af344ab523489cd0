"""Shared fixtures: one tiny synthetic world and its prepared panel per test session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig, SynthConfig
from gpuseg.data.panel import Panel, load_panel
from gpuseg.data.prepare import prepare
from gpuseg.data.synth import generate

# The test machine is small and shared: one intra-op thread avoids contention (and is faster here).
torch.set_num_threads(1)

TINY_WORLD = SynthConfig(n_subscribers=1500, n_periods=12, horizon=4, seed=0)


@dataclass(frozen=True)
class World:
    dir: Path
    summary: dict  # what generate() returned (also in world.json)

    @property
    def usage(self) -> Path:
        return self.dir / "usage.parquet"

    @property
    def static(self) -> Path:
        return self.dir / "static.parquet"

    @property
    def labels(self) -> Path:
        return self.dir / "labels.parquet"

    @property
    def truth(self) -> Path:
        return self.dir / "truth.parquet"

    def data_config(self, **overrides) -> DataConfig:
        kw = dict(usage=str(self.usage), static=str(self.static), labels=str(self.labels))
        return DataConfig(**(kw | overrides))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """1500 subscribers x 12 weekly periods, horizon 4, seed 0 (written once per session)."""
    out = tmp_path_factory.mktemp("tiny_world")
    return World(out, generate(TINY_WORLD, out))


@pytest.fixture(scope="session")
def tiny_panel_dir(tiny_world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world prepared on the CPU backend."""
    out = tmp_path_factory.mktemp("tiny_panel")
    prepare(tiny_world.data_config(), resolve_backend("cpu"), out)
    return out


@pytest.fixture(scope="session")
def tiny_panel(tiny_panel_dir: Path) -> Panel:
    return load_panel(tiny_panel_dir, mmap=False)
