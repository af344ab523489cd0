"""Checkpoints: the per-epoch resume state and the final model (safetensors weights + JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpuseg.config import ModelConfig, from_dict, to_dict
from gpuseg.data.split import Split
from gpuseg.errors import RunDirError
from gpuseg.io.store import ListOf, atomic_write, read_json, write_json_atomic
from gpuseg.model.sequence import SubscriberModel

# what model.json and metrics.json must hold to be used (checked where they are read)
MODEL_SCHEMA = dict(n_metrics=int, n_static=int, n_periods=int, model=dict, platt=ListOf(float))
METRICS_SCHEMA = dict(
    churn=dict(roc_auc=float, pr_auc=float, top_decile_lift=float, brier=float),
    migration=dict(macro_f1=(float, type(None))),  # null: churn-only labels (no migration)
    history=ListOf(dict),
)


TENSORS = "state.safetensors"  # a checkpoint's tensors where state.json names no other file


class EpochCheckpoint:
    """Everything needed to resume training after the last finished epoch, without pickle.

    Tensors (model, best model, optimizer moments, RNG states) go to ``state.<epoch>.safetensors``;
    scalars (epoch, history, scheduler, optimizer groups) and the name of that tensor file to
    ``state.json``. Both are written atomically, the JSON last, and the previous epoch's tensors
    are removed only after it, so a run killed at any point resumes from a JSON and tensors of
    the same epoch (one tensor file for every epoch: a kill between the two writes used to leave
    the new epoch's tensors beside the previous epoch's JSON).
    """

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def _tensors(self, meta: dict) -> Path:
        if not isinstance(meta, dict):
            raise RunDirError(f"{self.dir / 'state.json'}: not a checkpoint state (expected a map)")
        name = meta.get("tensors", TENSORS)
        plain = isinstance(name, str) and Path(name).name == name  # no path: inside the folder
        if not (plain and name.endswith(".safetensors")):
            raise RunDirError(f"{self.dir / 'state.json'}: 'tensors' is not a checkpoint file name")
        return self.dir / name

    def exists(self) -> bool:
        if not (self.dir / "state.json").is_file():
            return False
        return self._tensors(read_json(self.dir / "state.json")).is_file()

    def save(self, model, best_state, opt, sched, gen, scalars: dict) -> None:

        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
        }
        tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()}
        opt_state = opt.state_dict()
        for pid, st in opt_state["state"].items():
            for name, value in st.items():
                tensors[f"opt.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.gen"] = gen.get_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"state.{int(scalars['epoch'])}.safetensors"
        atomic_write(self.dir / name, lambda p: save_file(tensors, str(p)))
        meta = dict(
            scalars,
            optimizer_groups=opt_state["param_groups"],
            scheduler=sched.state_dict(),
            tensors=name,
        )
        write_json_atomic(self.dir / "state.json", meta)
        for old in self.dir.glob("state*.safetensors"):  # earlier epochs', now unreferenced
            if old.name != name:
                old.unlink(missing_ok=True)

    def load(self, model, opt, sched, gen) -> tuple[dict, dict]:
        """Restore model, optimizer, scheduler and RNGs; return (best_state, scalars)."""

        meta = read_json(self.dir / "state.json")
        path = self._tensors(meta)
        meta.pop("tensors", None)
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise RunDirError(f"{path}: unreadable checkpoint ({exc})") from None
        device = next(model.parameters()).device
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
        opt.load_state_dict({"state": state, "param_groups": meta.pop("optimizer_groups")})
        sched.load_state_dict(meta.pop("scheduler"))
        torch.set_rng_state(tensors["rng.torch"])
        gen.set_state(tensors["rng.gen"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        return best, meta


@dataclass
class TrainResult:
    model: SubscriberModel
    metrics: dict
    split: Split
    platt: tuple[float, float]
    history: list[dict]
    migration_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # class decision: argmax(p * w)


def save_checkpoint(
    result: TrainResult, panel_meta: dict, model_cfg: ModelConfig, run_dir: Path
) -> None:

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    atomic_write(run_dir / "model.safetensors", lambda p: save_file(state, str(p)))
    write_json_atomic(
        run_dir / "model.json",
        dict(
            n_metrics=result.model.n_metrics,
            n_static=result.model.n_static,
            n_periods=result.model.n_periods,
            model=to_dict(model_cfg),
            platt=list(result.platt),
            migration_weights=list(result.migration_weights),
            metrics=panel_meta["metrics"],
            static_features=panel_meta["static_features"],
        ),
    )
    split = dict(train=result.split.train, val=result.split.val, test=result.split.test)

    def write_split(p: Path) -> None:
        with open(p, "wb") as fh:  # a file object, so numpy does not append ".npz"
            np.savez(fh, **split)

    atomic_write(run_dir / "split.npz", write_split)
    write_json_atomic(run_dir / "metrics.json", result.metrics | {"history": result.history})


def model_from_info(info: dict, weights: dict[str, torch.Tensor], where: Path) -> SubscriberModel:
    """The model described by a ``model.json`` dict with its ``weights`` loaded, in eval mode on
    the CPU; a broken description or weights that do not fit raise :class:`RunDirError` naming
    ``where`` (the run directory)."""
    try:
        cfg = from_dict(ModelConfig, info["model"])
        model = SubscriberModel(info["n_metrics"], info["n_static"], info["n_periods"], cfg)
        model.load_state_dict(weights)
    except (KeyError, TypeError) as exc:
        raise RunDirError(f"{where / 'model.json'}: incomplete model description ({exc})") from None
    except RuntimeError as exc:
        raise RunDirError(
            f"{where / 'model.safetensors'}: weights do not match model.json "
            f"({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()


def load_checkpoint(
    run_dir: Path, device: torch.device | str = "cpu"
) -> tuple[SubscriberModel, dict]:
    """Rebuild the model from ``model.json`` and ``model.safetensors`` (no pickle involved)."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / "model.json", MODEL_SCHEMA)
    if len(info["platt"]) != 2:
        raise RunDirError(f"{run_dir / 'model.json'}: 'platt' must hold 2 numbers")
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise RunDirError(f"{weights}: missing (run gpuseg train first)")
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise RunDirError(f"{weights}: not a valid safetensors file ({exc})") from None
    return model_from_info(info, state, run_dir).to(device).eval(), info
