"""Typed errors. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class GpusegError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""

    exit_code = 1


class ConfigError(GpusegError):
    """A config file or override is malformed: unknown key, wrong type, bad value."""


class DataError(GpusegError):
    """Input data cannot be used: missing file or column, wrong type, duplicates, empty input."""


class BackendError(GpusegError):
    """The requested device or library is not available (e.g. --device cuda without a GPU)."""


class RunDirError(GpusegError):
    """A run directory is missing, incomplete, or was produced from another config."""


class WriteError(GpusegError):
    """An output cannot be written: read-only place, disk full, missing parent, file too large."""


class LeakageError(DataError):
    """A model would be fitted on features learned from its own training rows (e.g. a head over
    embeddings of the rows its encoder trained on)."""


class TrainingError(GpusegError):
    """Training failed in a way the user can fix: the loss diverged (too high a learning rate,
    extreme input values)."""
