"""Fingerprints of what each stage read, so a later stage or a re-run never reuses stale results.

Each stage records, in ``<run dir>/inputs.json``, a fingerprint of every file it read: size,
modification time and a hash. The fast hash (the default) covers files up to
:data:`WHOLE_BYTES` whole and, of larger files, the size, the first and last MiB and
:data:`SAMPLES` blocks spread between them; ``fingerprint: full`` in the run config hashes every
byte. Whether an input changed is decided by size and hash (the modification time is recorded for
the message only), so preparing the same data again gives the same panel and keeps the model,
while new data at the same paths is noticed.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

from gpuseg.errors import RunDirError
from gpuseg.io.store import read_json, write_json_atomic

RECORD = "inputs.json"
EDGE_BYTES = 1 << 20  # first and last MiB
WHOLE_BYTES = 8 << 20  # files up to this size are hashed whole even in fast mode
SAMPLES = 64  # blocks of SAMPLE_BYTES spread over the middle of a larger file
SAMPLE_BYTES = 64 << 10


def fingerprint(path: Path, full: bool = False) -> dict:
    """{size, mtime, hash} of ``path`` (hash ``fast:<sha256>`` or ``full:<sha256>``)."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256(str(st.st_size).encode())
    with open(path, "rb") as fh:
        if full or st.st_size <= WHOLE_BYTES:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(EDGE_BYTES))
            span = st.st_size - 2 * EDGE_BYTES - SAMPLE_BYTES
            for i in range(SAMPLES):
                fh.seek(EDGE_BYTES + span * i // max(SAMPLES - 1, 1))
                h.update(fh.read(SAMPLE_BYTES))
            fh.seek(st.st_size - EDGE_BYTES)
            h.update(fh.read(EDGE_BYTES))
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC).isoformat(timespec="seconds")
    return dict(size=st.st_size, mtime=mtime, hash=f"{'full' if full else 'fast'}:{h.hexdigest()}")


def fingerprints(paths: dict[str, Path], full: bool = False) -> dict[str, dict]:
    """name -> fingerprint of every path that exists (a missing one is left out)."""
    return {name: fingerprint(p, full) for name, p in paths.items() if Path(p).is_file()}


def changed(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """Names whose file appeared, disappeared, or changed size or content.

    A fast hash compared with a full one (the flag changed between runs) counts as changed.
    """
    names = sorted(set(old) | set(new))
    return [
        n
        for n in names
        if n not in old
        or n not in new
        or old[n].get("size") != new[n].get("size")
        or old[n].get("hash") != new[n].get("hash")
    ]


def read_record(run_dir: Path) -> dict[str, dict]:
    """stage -> {name: fingerprint} of ``run_dir/inputs.json`` ({} when there is none)."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RunDirError(f"{path}: must map each stage to its inputs (delete it to start over)")
    return data


def record(run_dir: Path, stage: str, inputs: dict[str, dict]) -> None:
    """Save ``inputs`` (fingerprints) as what ``stage`` read."""
    data = read_record(run_dir)
    data[stage] = inputs
    write_json_atomic(Path(run_dir) / RECORD, data)


def check_unchanged(run_dir: Path, stage: str, current: dict[str, dict], then: str) -> None:
    """RunDirError when the files ``stage`` recorded differ from ``current`` (same names); the
    message names the first changed file and ``then`` (what to run). No record: no check."""
    old = read_record(run_dir).get(stage)
    if old is None:
        return
    diff = [n for n in old if n not in current or changed({n: old[n]}, {n: current[n]})]
    if diff:
        was = old.get(diff[0], {})
        what = diff[0] if diff[0].startswith("data.") else Path(run_dir) / diff[0]  # key or file
        raise RunDirError(
            f"{what}: changed since {stage} read it (then {was.get('size')} "
            f"bytes, {was.get('mtime')}); {then}"
        )
