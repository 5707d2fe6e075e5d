"""Training checkpoints: everything needed to resume a run exactly.

``exp/checkpoints/epoch-NNNN.pt`` holds the model, optimizer, schedule, sampler and weight
average states, every process's RNG state, the progress so far and the config. Files are
written atomically (a kill leaves the previous one) and only the last N are kept; they load
with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lre.training.distributed import Dist
from lre.utils import LreError, atomic_open

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_resume_config",
    "gather_rng",
    "list_checkpoints",
    "load_latest_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lre-checkpoint-1"
_CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states, as tensors and plain values only."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (also after a round trip through a file)."""
    random.setstate(tuple(
        tuple(x) if isinstance(x, list) else x for x in state["python"]
    ))
    np_state = copy.deepcopy(state["numpy"])
    np_state["state"]["key"] = np_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng(dist: Dist) -> list[dict[str, Any]]:
    """Every process's RNG state, in rank order (the same list on all ranks)."""
    state = rng_state()
    if not dist.active:
        return [state]
    states: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def list_checkpoints(exp: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the checkpoints in ``exp/checkpoints``, oldest first."""
    found = []
    for p in (exp / "checkpoints").glob("epoch-*.pt"):
        m = _CHECKPOINT_NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def load_latest_checkpoint(exp: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a damaged newer one is reported and passed over."""
    for epoch, path in reversed(list_checkpoints(exp)):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file
            logger.warning("%s: cannot load (%s), trying an older checkpoint", path,
                           str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            logger.warning("%s: not an lre training checkpoint, skipped", path)
            continue
        logger.info("resuming from %s (epoch %d)", path, epoch)
        return ckpt
    return None


def save_checkpoint(exp: Path, keep: int, state: dict[str, Any]) -> Path:
    """Write ``state`` (with its ``epoch``) atomically; delete all but the last ``keep``."""
    path = exp / "checkpoints" / f"epoch-{state['epoch']:04d}.pt"
    with atomic_open(path, "wb") as f:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
    for _, old in list_checkpoints(exp)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def check_resume_config(saved: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Model settings must match the checkpoint's; other changes are allowed (and said)."""
    changed = {section: [f"{section}.{k}" for k, v in values.items()
                         if saved.get(section, {}).get(k) != v]
               for section, values in cfg.items()}
    if changed["model"]:
        raise LreError("--resume: model settings differ from the checkpoint's: "
                       + ", ".join(changed["model"]))
    if changed["data"] or changed["augment"]:
        logger.warning("--resume: %s changed: batches differ from an uninterrupted run",
                       ", ".join(changed["data"] + changed["augment"]))
    others = changed["optim"] + changed["schedule"] + changed["train"]
    if others:
        logger.info("--resume: changed %s", ", ".join(others))
