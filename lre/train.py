"""Training stage: ``lre train`` (also ``python -m lre.train``, the entry point for torchrun).

Reads ``feats.scp`` + ``utt2lang`` of a training data dir (and a dev dir), trains one of the
models of :mod:`lre.models` and writes the experiment dir::

    exp/<model>/config.yaml          resolved config (model sizes and training settings)
    exp/<model>/lang2id              language -> output index
    exp/<model>/feats_config.json    the features the model expects (copy of the train dir's)
    exp/<model>/checkpoints/         epoch-NNNN.pt: everything needed to resume (last N kept)
    exp/<model>/best.pt, final.pt    model files (:func:`lre.models.save_model` format)
    exp/<model>/log/train.log        the log; metrics.csv and training_curves.png per epoch

Settings come from built-in defaults, then a YAML file (``--config``), then ``--set
section.key=value`` overrides; every key is checked against the defaults. Sections:
``model`` (the model's own sizes, :func:`lre.models.default_config`), ``data``
(:class:`lre.dataset.LoaderConfig`; ``batch_size`` is per process), ``augment`` (on-the-fly
frequency warping and SpecAugment masks), ``optim``, ``schedule`` and ``train``.

Distributed data-parallel training: ``torchrun --nproc_per_node N -m lre.train ...`` (gloo on
CPU, nccl on GPU). Every process reads its share of the batches; only rank 0 logs to file and
writes the experiment dir. One optimizer step sees ``N * data.batch_size`` crops.
"""

from __future__ import annotations

import argparse
import copy
import csv
import difflib
import io
import logging
import math
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lre.dataset import (
    FeatureReader,
    LoaderConfig,
    SegmentGeometry,
    geometry_of,
    make_eval_loader,
    make_train_loader,
)
from lre.utils import LreError, atomic_open, atomic_write_text, seed_everything, setup_logging

# Not __name__: under `python -m lre.train` that is "__main__", outside the "lre" loggers.
logger = logging.getLogger("lre.train")

CHECKPOINT_FORMAT = "lre-checkpoint-1"
_CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)\.pt$")

#: Built-in training settings; the ``model`` section is filled from the model's defaults.
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": LoaderConfig().to_dict(),
    "optim": {
        "name": "adam",  # adam | adamw
        "lr": 0.001,
        "weight_decay": 0.0,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1.0e-8,
        "grad_clip": 5.0,  # max gradient norm; 0 = off
        "label_smoothing": 0.0,
        # Weight of an auxiliary loss: the classifier applied to every segment on its own
        # (the per-segment posteriors), averaged over real segments. It gives the lower
        # levels a short path to the labels.
        "segment_loss": 0.0,
    },
    "schedule": {
        "warmup_epochs": 1.0,  # linear warm-up from lr / warmup steps to lr
        "decay": "cosine",  # cosine | exponential | none
        "min_lr_ratio": 0.01,  # floor of the decay, as a fraction of lr
        "gamma": 0.9,  # exponential decay per epoch
    },
    "augment": {  # on-the-fly, per training crop (SpecAugment; VTLP-like warping)
        "freq_warp": 0.0,  # scale the mel axis by a random factor in [1 - w, 1 + w]
        "freq_masks": 0,  # bands of feature dims set to 0 (the mean after CMVN)
        "freq_mask_width": 8,  # widest band, in dims
        "time_masks": 0,  # spans of frames set to 0
        "time_mask_width": 20,  # longest span, in frames
    },
    "train": {
        "epochs": 30,
        "patience": 0,  # stop after this many epochs without a better dev score; 0 = never
        "select_by": "accuracy",  # accuracy | loss: what makes best.pt
        "final_weights": "best",  # best | last | average: the weights final.pt holds
        # Average the weights at the end of each of the last N epochs (0 = off), as in
        # stochastic weight averaging; the average is scored on dev every epoch it changes.
        "average_last": 0,
        "keep_checkpoints": 3,
        "seed": 0,
        "precision": "auto",  # auto (bf16 on GPU) | bf16 | fp32
        "threads": 0,  # torch CPU threads; 0 = torch's default
        "progress": True,  # tqdm bar per epoch
    },
}
_CHOICES = {
    "optim.name": ("adam", "adamw"),
    "schedule.decay": ("cosine", "exponential", "none"),
    "train.select_by": ("accuracy", "loss"),
    "train.final_weights": ("best", "last", "average"),
    "train.precision": ("auto", "bf16", "fp32"),
}


# --------------------------------------------------------------------------------------------
# Configuration


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """``value`` as the type of ``default`` (YAML reads ``1e-3`` as a string, for one)."""
    if default is None:
        return value
    bad = LreError(f"{source}: {key}: expected {type(default).__name__}, got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise bad
    if isinstance(value, (bool, dict, list)) and not isinstance(default, list):
        raise bad
    try:
        if isinstance(default, int):
            number = float(value)
            if not number.is_integer():
                raise bad
            return int(number)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise bad from None
    if isinstance(default, list):
        if not isinstance(value, list):
            raise bad
        return value
    return str(value) if isinstance(default, str) else value


def _merge(base: dict, update: dict, source: str, prefix: str = "") -> None:
    """Merge ``update`` into ``base`` in place; unknown keys and wrong types raise."""
    if not isinstance(update, dict):
        raise LreError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping")
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(key, [str(k) for k in base], n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            known = ", ".join(str(k) for k in base)
            raise LreError(f"{source}: unknown key '{dotted}'{hint}; known: {known}")
        if isinstance(base[key], dict):
            _merge(base[key], value, source, dotted + ".")
        else:
            base[key] = _coerce(value, base[key], dotted, source)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["model.h1=128", "optim.lr=2e-3"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise LreError(f"--set {item}: expected section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LreError(f"--set {item}: '{part}' is set both as a value and a section")
        node[parts[-1]] = value
    return out


def _place_bare_keys(sets: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Move ``--set epochs=5`` to ``train.epochs`` when exactly one section has the key."""
    for key in [k for k in sets if k not in cfg]:
        homes = [section for section, values in cfg.items() if key in values]
        if len(homes) > 1:
            raise LreError(f"--set {key}: ambiguous, say which: "
                           + ", ".join(f"{h}.{key}" for h in homes))
        if homes:
            sets.setdefault(homes[0], {})[key] = sets.pop(key)


def _model_defaults(name: str) -> dict[str, Any]:
    from lre.models import default_config

    try:
        return copy.deepcopy(dict(default_config(name)))
    except LreError:
        raise
    except (KeyError, ValueError) as e:
        raise LreError(f"model '{name}': unknown model ({e})") from None


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict (empty file -> {})."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LreError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise LreError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LreError(f"{path}: expected a mapping of sections (model, data, optim, ...)")
    return data


def resolve_config(
    model: str | None = None,
    config: str | os.PathLike | dict | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
) -> dict[str, Any]:
    """The full training config: defaults <- config file (or dict) <- ``--set`` overrides.

    ``model`` (``--model``) wins over the file's ``model.name``. Unknown keys, values of the
    wrong type and out-of-range settings raise :class:`LreError` naming the key.
    """
    if isinstance(config, dict):
        source, user = "config", copy.deepcopy(config)
    elif config is not None:
        source, user = str(config), load_config_file(config)
    else:
        source, user = "config", {}
    sets = parse_overrides(overrides)
    file_model = user.get("model", {}) if isinstance(user.get("model"), dict) else {}
    set_model = sets.get("model", {}) if isinstance(sets.get("model"), dict) else {}
    name = model or set_model.get("name") or file_model.get("name") or "hgru"
    if model and file_model.get("name") not in (None, model):
        logger.info("--model %s replaces model.name %s of %s", model, file_model["name"], source)
    cfg: dict[str, Any] = {"model": {"name": str(name), **_model_defaults(str(name))}}
    cfg.update(copy.deepcopy(DEFAULTS))
    _place_bare_keys(sets, cfg)
    for src, upd in ((source, user), ("--set", sets)):
        upd = copy.deepcopy(upd)
        if isinstance(upd.get("model"), dict):
            upd["model"]["name"] = str(name)
        _merge(cfg, upd, src)
    if seed is not None:
        cfg["train"]["seed"] = int(seed)
    check_config(cfg)
    return cfg


def check_config(cfg: dict[str, Any]) -> None:
    """Range and choice checks of the training settings (model sizes are the model's job)."""
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        if cfg[section][key] not in choices:
            raise LreError(f"config: {dotted}: {cfg[section][key]!r} is not one of "
                           f"{', '.join(choices)}")
    LoaderConfig.from_dict(cfg["data"]).validate()
    o, s, t = cfg["optim"], cfg["schedule"], cfg["train"]
    checks = [
        (o["lr"] > 0, "optim.lr", "must be > 0"),
        (o["weight_decay"] >= 0, "optim.weight_decay", "must be >= 0"),
        (0 <= o["beta1"] < 1 and 0 <= o["beta2"] < 1, "optim.beta1/beta2", "must be in [0, 1)"),
        (o["eps"] > 0, "optim.eps", "must be > 0"),
        (o["grad_clip"] >= 0, "optim.grad_clip", "must be >= 0 (0 = off)"),
        (0 <= o["label_smoothing"] < 1, "optim.label_smoothing", "must be in [0, 1)"),
        (o["segment_loss"] >= 0, "optim.segment_loss", "must be >= 0"),
        (s["warmup_epochs"] >= 0, "schedule.warmup_epochs", "must be >= 0"),
        (0 <= s["min_lr_ratio"] <= 1, "schedule.min_lr_ratio", "must be in [0, 1]"),
        (0 < s["gamma"] <= 1, "schedule.gamma", "must be in (0, 1]"),
        (t["epochs"] >= 1, "train.epochs", "must be >= 1"),
        (t["patience"] >= 0, "train.patience", "must be >= 0 (0 = no early stopping)"),
        (t["keep_checkpoints"] >= 1, "train.keep_checkpoints", "must be >= 1"),
        (t["average_last"] >= 0, "train.average_last", "must be >= 0 (0 = off)"),
        (t["final_weights"] != "average" or t["average_last"] >= 1, "train.final_weights",
         "average needs train.average_last >= 1"),
        (t["threads"] >= 0, "train.threads", "must be >= 0"),
    ]
    a = cfg["augment"]
    checks += [
        (0 <= a["freq_warp"] < 0.5, "augment.freq_warp", "must be in [0, 0.5)"),
        (a["freq_masks"] >= 0 and a["time_masks"] >= 0, "augment.freq_masks/time_masks",
         "must be >= 0"),
        (a["freq_mask_width"] >= 1 and a["time_mask_width"] >= 1,
         "augment.freq_mask_width/time_mask_width", "must be >= 1"),
    ]
    for ok, key, message in checks:
        if not ok:
            section, _, name = key.partition(".")
            value = cfg[section].get(name, "")
            raise LreError(f"config: {key}: {message}, got {value}")


# --------------------------------------------------------------------------------------------
# Distributed set-up


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a float64 CPU tensor over processes."""
        if not self.active:
            return values
        t = values.to(self.device)
        torch.distributed.all_reduce(t)
        return t.cpu()


def _setup_distributed() -> _Dist:
    """Join the process group that torchrun describes in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size <= 1:
        return _Dist(device=device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank()
    if rank != 0:
        logging.getLogger("lre").setLevel(logging.WARNING)
    return _Dist(rank, torch.distributed.get_world_size(), local_rank, device)


# --------------------------------------------------------------------------------------------
# Optimizer, schedule and state


def _lr_factor(step: int, warmup: int, total: int, steps_per_epoch: int, s: dict) -> float:
    """Learning-rate multiplier after ``step`` optimizer steps: linear warm-up, then decay."""
    if step < warmup:
        return (step + 1) / warmup
    if s["decay"] == "none":
        return 1.0
    if s["decay"] == "exponential":
        return max(s["min_lr_ratio"], s["gamma"] ** ((step - warmup) / steps_per_epoch))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return s["min_lr_ratio"] + (1 - s["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress))


def _make_optimizer(model: torch.nn.Module, o: dict) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if o["name"] == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
               weight_decay=o["weight_decay"])


def _make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    s = dict(cfg["schedule"])
    warmup = round(s["warmup_epochs"] * steps_per_epoch)
    total = cfg["train"]["epochs"] * steps_per_epoch
    # A closure (not an object) so that the schedule comes from the config on resume and
    # only the step count comes from the checkpoint.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, warmup, total, steps_per_epoch, s)
    )


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(
        tuple(x) if isinstance(x, list) else x for x in state["python"]
    ))
    np_state = copy.deepcopy(state["numpy"])
    np_state["state"]["key"] = np_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng(dist: _Dist) -> list[dict[str, Any]]:
    """Every process's RNG state, in rank order (the same list on all ranks)."""
    state = _rng_state()
    if not dist.active:
        return [state]
    states: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def _checkpoints(exp: Path) -> list[tuple[int, Path]]:
    found = []
    for p in (exp / "checkpoints").glob("epoch-*.pt"):
        m = _CHECKPOINT_NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _load_latest_checkpoint(exp: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a damaged newer one is reported and passed over."""
    for epoch, path in reversed(_checkpoints(exp)):
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


# --------------------------------------------------------------------------------------------
# Epochs


@dataclass
class EpochStats:
    """Sums over one pass; means are ``loss / count`` and ``correct / count``."""

    loss: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    frames: float = 0.0
    seconds: float = 0.0
    lr: float = 0.0  # the learning rate of the last step


    def reduced(self, dist: _Dist) -> EpochStats:
        t = dist.all_sum(torch.tensor([self.loss, self.correct, self.count, self.frames],
                                      dtype=torch.float64))
        return EpochStats(*t.tolist(), seconds=self.seconds, lr=self.lr)

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


def _random_bands(count: int, widest: int, extent: torch.Tensor, size: int,
                  device: torch.device) -> torch.Tensor:
    """``(batch, size)`` bool: ``count`` random bands per row, each up to ``widest`` long and
    inside ``[0, extent[row])``."""
    batch = extent.shape[0]
    width = (torch.rand(batch, count, device=device) * (widest + 1)).long()
    room = (extent[:, None] - width).clamp(min=0) + 1
    start = (torch.rand(batch, count, device=device) * room).long()
    pos = torch.arange(size, device=device)[None, None, :]
    return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)


def augment_features(feats: torch.Tensor, lengths: torch.Tensor, a: dict) -> torch.Tensor:
    """Random frequency warping and SpecAugment masks for a training batch.

    ``feats (batch, frames, feat_dim)``, ``lengths (batch,)``; returns a new tensor. Warping
    reads each row's feature dim ``d`` from ``d * alpha`` (linear interpolation, ``alpha``
    uniform in ``[1 - freq_warp, 1 + freq_warp]``), a cheap stand-in for vocal tract length
    perturbation on mel-spaced features. Masks set bands of dims / spans of frames to 0, the
    mean after CMVN. Draws from torch's RNG, so a seed (and a resumed run) repeats it.
    """
    batch, frames, dim = feats.shape
    device = feats.device
    out = feats
    if a["freq_warp"] > 0:
        alpha = 1 + (torch.rand(batch, device=device) * 2 - 1) * a["freq_warp"]
        pos = (torch.arange(dim, device=device)[None, :] * alpha[:, None]).clamp(max=dim - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=dim - 1)
        w = (pos - lo).to(feats.dtype)[:, None, :]
        take = lambda idx: torch.gather(out, 2, idx[:, None, :].expand(batch, frames, dim))  # noqa: E731
        out = take(lo) * (1 - w) + take(hi) * w
    keep = torch.ones(batch, frames, dim, dtype=torch.bool, device=device)
    if a["freq_masks"] > 0:
        band = _random_bands(a["freq_masks"], a["freq_mask_width"],
                             torch.full((batch,), dim, device=device), dim, device)
        keep &= ~band[:, None, :]
    if a["time_masks"] > 0:
        span = _random_bands(a["time_masks"], a["time_mask_width"], lengths.to(device),
                             frames, device)
        keep &= ~span[:, :, None]
    if a["freq_masks"] > 0 or a["time_masks"] > 0:
        out = out * keep
    return out


def _autocast(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _check_batch_errors(batch, bad_feats: str, dist: _Dist) -> bool:
    """Report unreadable items; True when the batch can still be used."""
    if batch.errors:
        if bad_feats == "error":
            raise LreError(batch.errors[0])
        for message in batch.errors:
            logger.warning("skipped: %s", message)
    if len(batch) == 0:
        if dist.active:  # every process must take every step
            raise LreError("a whole batch had unreadable features: " + "; ".join(batch.errors))
        return False
    return True


def _segment_loss(out, labels: torch.Tensor, loss_fn: torch.nn.Module) -> torch.Tensor:
    """``loss_fn`` over every real segment, each labelled with its utterance's language."""
    mask = out.segment_mask
    seg_labels = labels[:, None].expand_as(mask)[mask]
    return loss_fn(out.segment_logits[mask].float(), seg_labels)


def _train_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss_fn: torch.nn.Module,
    cfg: dict,
    dist: _Dist,
    bf16: bool,
    desc: str,
) -> EpochStats:
    from tqdm import tqdm

    model.train()
    stats = EpochStats()
    start = time.perf_counter()
    grad_clip = cfg["optim"]["grad_clip"]
    segment_loss = cfg["optim"]["segment_loss"]
    a = cfg["augment"]
    augment = a if a["freq_warp"] > 0 or a["freq_masks"] > 0 or a["time_masks"] > 0 else None
    # The bar is for a terminal; in a log file the line per epoch says the same.
    bar = tqdm(total=len(loader), desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               disable=not (cfg["train"]["progress"] and dist.main and sys.stderr.isatty()))
    with bar:
        for step, batch in enumerate(loader, 1):
            if not _check_batch_errors(batch, cfg["data"]["bad_feats"], dist):
                continue
            batch.to(dist.device, non_blocking=True)
            feats = augment_features(batch.feats, batch.lengths, augment) if augment else \
                batch.feats
            with _autocast(dist.device, bf16):
                out = model(feats, batch.lengths, with_segments=segment_loss > 0)
            loss = loss_fn(out.logits.float(), batch.labels)
            if segment_loss > 0:
                loss = loss + segment_loss * _segment_loss(out, batch.labels, loss_fn)
            if not torch.isfinite(loss):
                raise LreError(f"{desc}, step {step}: the loss is {loss.item()} "
                               "(try a lower optim.lr or check the features)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            stats.lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            n = len(batch)
            stats.loss += loss.item() * n
            stats.correct += (out.logits.argmax(-1) == batch.labels).sum().item()
            stats.count += n
            stats.frames += batch.lengths.sum().item()
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{stats.mean_loss:.3f}", acc=f"{stats.accuracy:.3f}",
                            fps=f"{stats.frames * dist.world_size / elapsed:.0f}", refresh=False)
            bar.update()
    stats.seconds = time.perf_counter() - start
    return stats.reduced(dist)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader, device: torch.device | str = "cpu", bf16: bool = False,
    bad_feats: str = "error",
) -> EpochStats:
    """Cross-entropy and accuracy of ``model`` on whole utterances (this process's share)."""
    model.eval()
    stats = EpochStats()
    start = time.perf_counter()
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    for batch in loader:
        if not _check_batch_errors(batch, bad_feats, _Dist()):
            continue
        batch.to(device)
        with _autocast(torch.device(device), bf16):
            out = model(batch.feats, batch.lengths)
        logits = out.logits.float()
        stats.loss += loss_fn(logits, batch.labels).item()
        stats.correct += (logits.argmax(-1) == batch.labels).sum().item()
        stats.count += len(batch)
        stats.frames += batch.lengths.sum().item()
    stats.seconds = time.perf_counter() - start
    return stats


@dataclass
class _Progress:
    """Where training stands: per-epoch metrics, the best epoch so far, early stopping."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "loss", "acc"} of the monitored set
    bad_epochs: int = 0
    done: bool = False

    @property
    def epoch(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    def add(self, row: dict[str, Any], monitor: dict[str, Any], t: dict[str, Any]) -> bool:
        """Record an epoch; True when it is the best so far."""
        self.history.append(row)
        improved = self.best is None or (
            monitor["loss"] < self.best["loss"] if t["select_by"] == "loss"
            # Accuracy ties (common once it reaches 100%) are broken by the loss.
            else (monitor["acc"], -monitor["loss"]) > (self.best["acc"], -self.best["loss"]))
        if improved:
            self.best, self.bad_epochs = monitor, 0
        else:
            self.bad_epochs += 1
        self.done = row["epoch"] >= t["epochs"] or 0 < t["patience"] <= self.bad_epochs
        return improved

    def state(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
                "done": self.done}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Progress:
        return cls(list(state["history"]), state["best"], state["bad_epochs"], state["done"])


# --------------------------------------------------------------------------------------------
# Outputs


_CSV_FIELDS = ["epoch", "train_loss", "train_acc", "dev_loss", "dev_acc", "avg_dev_loss",
               "avg_dev_acc", "lr", "seconds", "frames_per_s"]


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in _CSV_FIELDS})
    atomic_write_text(path, buf.getvalue())


def plot_training_curves(history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch (train and, when there, dev and dev with the averaged
    weights) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    marker = "o" if len(epochs) <= 30 else None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "cross-entropy"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], marker=marker, label="train")
        if any(h.get(f"dev_{key}") is not None for h in history):
            ax.plot(epochs, [h.get(f"dev_{key}") for h in history], marker=marker, label="dev")
        averaged = [(e, h[f"avg_dev_{key}"]) for e, h in zip(epochs, history, strict=True)
                    if h.get(f"avg_dev_{key}") is not None]
        if averaged:
            ax.plot(*zip(*averaged, strict=True), marker=marker, label="dev, averaged weights")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def _languages(data_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Languages of the utterances that have features, C-sorted, and the utt2lang map."""
    from lre.data.datadir import c_sorted, read_kv

    for name in ("utt2lang", "feats.scp"):
        if not (data_dir / name).is_file():
            hint = " (compute features first: lre features)" if name == "feats.scp" else ""
            raise LreError(f"{data_dir / name}: not found{hint}")
    utt2lang = read_kv(data_dir / "utt2lang")
    feats = read_kv(data_dir / "feats.scp")
    return c_sorted({lang for utt, lang in utt2lang.items() if utt in feats}), utt2lang


def _check_dev_languages(dev: Path, lang2id: dict[str, int]) -> None:
    dev_langs, utt2lang = _languages(dev)
    unknown = [lang for lang in dev_langs if lang not in lang2id]
    if unknown:
        n = sum(1 for lang in utt2lang.values() if lang in unknown)
        raise LreError(f"{dev / 'utt2lang'}: language(s) not in the training data: "
                       f"{', '.join(unknown)} ({n} utterances)")


def _check_dev_features(dev: Path, train: FeatureReader) -> None:
    """Dev features must have the training features' dimension (and should be the same)."""
    reader = FeatureReader(dev)
    if reader.feat_dim != train.feat_dim:
        raise LreError(f"{dev / 'feats.scp'}: {reader.feat_dim}-dim features, but the training "
                       f"features are {train.feat_dim}-dim")
    if (reader.feature_config is not None and train.feature_config is not None
            and reader.feature_config != train.feature_config):
        logger.warning("%s: feats_config.json differs from the training data's", dev)


def _build_model(cfg: dict, feat_dim: int, num_langs: int) -> torch.nn.Module:
    from lre.models import build_model

    model_cfg = {k: v for k, v in cfg["model"].items() if k != "name"}
    name = cfg["model"]["name"]
    try:
        return build_model(name, feat_dim, num_langs, model_cfg)
    except LreError:
        raise
    except (ValueError, TypeError, KeyError, AssertionError, RuntimeError) as e:
        raise LreError(f"model '{name}': impossible config: {e}") from None


def _probe_geometry(model: torch.nn.Module, cfg: dict, feat_dim: int, frame_shift: float):
    """The model's segment geometry; a model that cannot run gives a one-line error."""
    try:
        return geometry_of(model, feat_dim, frame_shift)
    except LreError:
        raise
    except Exception as e:  # a geometry that does not fit crashes somewhere inside torch
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LreError(f"model '{cfg['model']['name']}': this config cannot run on a 10 s "
                       f"input ({cause}); check the window/segment sizes") from None


# --------------------------------------------------------------------------------------------
# The stage


@dataclass
class TrainResult:
    """What a training run produced."""

    exp_dir: Path
    final: Path | None
    best: Path | None
    history: list[dict[str, Any]]
    best_epoch: int | None
    finished: bool


class _LogToFile:
    """Send the ``lre`` loggers to ``path`` (and make sure INFO gets through) for a while."""

    def __init__(self, path: Path | None):
        self.path = path
        self.handler: logging.Handler | None = None
        self.old_level: int | None = None

    def __enter__(self) -> _LogToFile:
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        from lre.utils import LOG_FORMAT

        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger("lre")
        root.addHandler(self.handler)
        if root.getEffectiveLevel() > logging.INFO:
            self.old_level = root.level
            root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        if self.handler is not None:
            root = logging.getLogger("lre")
            root.removeHandler(self.handler)
            self.handler.close()
            if self.old_level is not None:
                root.setLevel(self.old_level)


def train(
    train_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    dev_dir: str | os.PathLike | None = None,
    model: str | None = None,
    config: str | os.PathLike | dict | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    seed: int | None = None,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train a model on ``train_dir`` and write ``exp_dir`` (see the module docstring).

    ``resume`` continues from the newest checkpoint in ``exp_dir/checkpoints`` with the
    optimizer, schedule, sampler and RNG states, so the result equals an uninterrupted run.
    ``stop_after_epochs`` ends this run after that many epochs (e.g. to fit a job's time
    limit); continue later with ``resume``. Called under torchrun, it trains with DDP.
    """
    dist = _setup_distributed()
    try:
        exp = Path(exp_dir)
        log_path = exp / "log" / "train.log" if dist.main else None
        if log_path is not None:
            exp.mkdir(parents=True, exist_ok=True)
        with _LogToFile(log_path):
            return _train(Path(train_dir), exp, None if dev_dir is None else Path(dev_dir),
                          model, config, overrides, resume, seed, stop_after_epochs, dist)
    finally:
        if dist.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(
    train_dir: Path,
    exp: Path,
    dev_dir: Path | None,
    model_name: str | None,
    config: str | os.PathLike | dict | None,
    overrides: Sequence[str],
    resume: bool,
    seed: int | None,
    stop_after_epochs: int | None,
    dist: _Dist,
) -> TrainResult:
    from lre.data.datadir import write_kv
    from lre.models import load_model, save_model

    cfg = resolve_config(model_name, config, overrides, seed)
    name, t = cfg["model"]["name"], cfg["train"]
    checkpoint = _load_latest_checkpoint(exp) if resume else None
    if resume and checkpoint is None:
        logger.info("%s: no checkpoint to resume from, starting a new run", exp / "checkpoints")
    if not resume and _checkpoints(exp):
        raise LreError(f"{exp / 'checkpoints'}: holds checkpoints of an earlier run; pass "
                       "--resume to continue it, or use a new --exp dir")
    if checkpoint is not None:
        _check_resume_config(checkpoint["config"], cfg)
    if t["threads"]:
        torch.set_num_threads(t["threads"])

    langs, _ = _languages(train_dir)
    if len(langs) < 2:
        raise LreError(f"{train_dir / 'utt2lang'}: needs at least 2 languages with features, "
                       f"found {len(langs)}")
    if checkpoint is not None and checkpoint["langs"] != langs:
        raise LreError(f"{train_dir}: languages differ from the checkpoint's "
                       f"({', '.join(checkpoint['langs'])}); cannot resume")
    lang2id = {lang: i for i, lang in enumerate(langs)}
    if dev_dir is not None:
        _check_dev_languages(dev_dir, lang2id)

    seed_everything(t["seed"])
    loader_cfg = LoaderConfig.from_dict(cfg["data"])
    cuda = dist.device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    bf16 = cuda and t["precision"] in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    if t["precision"] == "bf16" and not bf16:
        logger.warning("train.precision bf16 needs a GPU with bf16: training in fp32")

    # The feature reader knows the dimension; build the model and read its geometry first
    # so that an impossible config fails before any data is read.
    reader = FeatureReader(train_dir)
    feat_dim, frame_shift = reader.feat_dim, reader.frame_shift
    if dev_dir is not None:
        _check_dev_features(dev_dir, reader)
    net = _build_model(cfg, feat_dim, len(langs))
    geometry: SegmentGeometry = _probe_geometry(net, cfg, feat_dim, frame_shift)
    logger.info("model %s: %d parameters, segments of %d frames every %d frames",
                name, sum(p.numel() for p in net.parameters()), geometry.span, geometry.hop)
    if dist.active:  # the same initial weights everywhere, then each its own dropout
        seed_everything(t["seed"] + 7919 * dist.rank)

    train_loader, sampler = make_train_loader(
        train_dir, lang2id, geometry, loader_cfg, seed=t["seed"], rank=dist.rank,
        world_size=dist.world_size, pin_memory=cuda, reader=reader)
    dev_loader = None
    if dev_dir is not None:
        dev_loader = make_eval_loader(dev_dir, lang2id, loader_cfg, rank=dist.rank,
                                      world_size=dist.world_size, pin_memory=cuda)

    net.to(dist.device)
    model: torch.nn.Module = net
    if dist.active:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dist.device.index] if cuda else None)
    optimizer = _make_optimizer(net, cfg["optim"])
    steps_per_epoch = len(sampler)
    scheduler = _make_scheduler(optimizer, cfg, steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg["optim"]["label_smoothing"])
    # The running mean of the end-of-epoch weights over the last average_last epochs (batch
    # norm statistics averaged alike); every process keeps it, as each scores part of dev.
    average = (torch.optim.swa_utils.AveragedModel(net, use_buffers=True)
               if t["average_last"] else None)
    average_from = t["epochs"] - t["average_last"] + 1

    progress = _Progress()
    if checkpoint is not None:
        net.load_state_dict(checkpoint["model"])
        if average is not None and checkpoint.get("average") is not None:
            average.load_state_dict(checkpoint["average"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        sampler.load_state_dict(checkpoint["sampler"])
        rng = checkpoint["rng"]
        if len(rng) != dist.world_size:
            logger.warning("checkpoint from %d process(es), now %d: RNG streams differ from "
                           "the interrupted run", len(rng), dist.world_size)
        _set_rng_state(rng[dist.rank % len(rng)])
        progress = _Progress.from_state(checkpoint["progress"])
    # Against this run's settings, so that a finished run resumed with more epochs goes on.
    progress.done = progress.epoch >= t["epochs"] or 0 < t["patience"] <= progress.bad_epochs

    if dist.main:
        atomic_write_text(exp / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        write_kv(exp / "lang2id", lang2id)
        feats_cfg = train_dir / "feats_config.json"
        if feats_cfg.is_file():
            atomic_write_text(exp / "feats_config.json", feats_cfg.read_text(encoding="utf-8"))
        logger.info("training %s on %s (%d languages, %d utterances), dev %s, %d process(es), "
                    "%d steps per epoch", name, train_dir, len(langs),
                    len(train_loader.dataset), dev_dir or "none", dist.world_size,
                    steps_per_epoch)

    dirs = {"train_dir": str(train_dir), "dev_dir": None if dev_dir is None else str(dev_dir)}
    epochs_run = 0
    while not progress.done:
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            logger.info("stopping after %d epoch(s) as asked; continue with --resume",
                        epochs_run)
            break
        epoch = progress.epoch + 1
        sampler.set_epoch(epoch)
        desc = f"epoch {epoch}/{t['epochs']}"
        tr = _train_epoch(model, train_loader, optimizer, scheduler, loss_fn, cfg, dist, bf16,
                          desc)
        row: dict[str, Any] = {
            "epoch": epoch, "train_loss": tr.mean_loss, "train_acc": tr.accuracy,
            "dev_loss": None, "dev_acc": None, "lr": tr.lr,
            "seconds": tr.seconds, "frames_per_s": tr.frames / max(tr.seconds, 1e-9),
        }
        monitor = {"epoch": epoch, "loss": tr.mean_loss, "acc": tr.accuracy}
        if dev_loader is not None:
            dev = evaluate(net, dev_loader, dist.device, bf16, loader_cfg.bad_feats)
            dev = dev.reduced(dist)
            row["dev_loss"], row["dev_acc"] = dev.mean_loss, dev.accuracy
            row["seconds"] += dev.seconds
            monitor = {"epoch": epoch, "loss": dev.mean_loss, "acc": dev.accuracy}
        if average is not None and epoch >= average_from:
            average.update_parameters(net)
            if dev_loader is not None:
                # (a data loader draws a seed from the global RNG: restore it, so that
                # averaging leaves the training itself unchanged)
                with torch.random.fork_rng(devices=[]):
                    avg = evaluate(average.module, dev_loader, dist.device, bf16,
                                   loader_cfg.bad_feats).reduced(dist)
                row["avg_dev_loss"], row["avg_dev_acc"] = avg.mean_loss, avg.accuracy
                row["seconds"] += avg.seconds
        improved = progress.add(row, monitor, t)
        rng_states = _gather_rng(dist)
        if dist.main:
            if improved:  # before the checkpoint, so a resumed run never lacks its best.pt
                save_model(exp / "best.pt", net, langs, extra={
                    "epoch": epoch, **dirs, "dev_acc": row["dev_acc"],
                    "dev_loss": row["dev_loss"]})
            _save_checkpoint(exp, t["keep_checkpoints"], {
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "model_name": name,
                "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                "rng": rng_states, "progress": progress.state(), "config": cfg,
                "langs": langs, "average": None if average is None else average.state_dict(),
            })
            _write_metrics_csv(exp / "metrics.csv", progress.history)
            _log_epoch(desc, row, improved)
            if progress.done and epoch < t["epochs"]:
                logger.info("early stop: no better %s score for %d epochs",
                            "dev" if dev_loader is not None else "train", progress.bad_epochs)
        dist.barrier()
        epochs_run += 1

    final = None
    if progress.done and dist.main:
        final = exp / "final.pt"
        best = progress.best or {}
        weights, dev_acc = t["final_weights"], best.get("acc")
        averaged = 0 if average is None else int(average.n_averaged)
        if weights == "average" and not averaged:
            logger.warning("training ended before epoch %d, the first one averaged: final.pt "
                           "holds the best weights", average_from)
            weights = "best"
        if weights == "best" and (exp / "best.pt").is_file():
            net, _ = load_model(exp / "best.pt")
        elif weights == "average":
            net = average.module  # type: ignore[union-attr]
            dev_acc = progress.history[-1].get("avg_dev_acc")
            logger.info("final weights: the average of epochs %d-%d", progress.epoch
                        - averaged + 1, progress.epoch)
        elif weights == "last":
            dev_acc = progress.history[-1]["dev_acc"]
        save_model(final, net, langs, extra={
            "epoch": progress.epoch, "best_epoch": best.get("epoch"),
            "final_weights": weights, "averaged_epochs": averaged, **dirs,
            "dev_acc": dev_acc if dev_dir is not None else None,
        })
        plot_training_curves(progress.history, exp / "training_curves.png")
        logger.info("done: %s (best epoch %s, %s accuracy %.4f)", final, best.get("epoch"),
                    "dev" if dev_dir is not None else "train", best.get("acc", float("nan")))
        if averaged and dev_dir is not None:
            logger.info("averaged weights of the last %d epochs: dev accuracy %.4f", averaged,
                        progress.history[-1]["avg_dev_acc"])
    dist.barrier()
    return TrainResult(exp, final, exp / "best.pt" if final else None, progress.history,
                       (progress.best or {}).get("epoch"), progress.done)


def _log_epoch(desc: str, row: dict[str, Any], improved: bool) -> None:
    dev = ("" if row["dev_acc"] is None else
           f" | dev loss {row['dev_loss']:.4f} acc {row['dev_acc']:.4f}")
    if row.get("avg_dev_acc") is not None:
        dev += f" | averaged: dev acc {row['avg_dev_acc']:.4f}"
    logger.info("%s: train loss %.4f acc %.4f%s | lr %.3g | %.1f s, %.0f frames/s%s", desc,
                row["train_loss"], row["train_acc"], dev, row["lr"], row["seconds"],
                row["frames_per_s"], " [best]" if improved else "")


def _check_resume_config(saved: dict, cfg: dict) -> None:
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


def _save_checkpoint(exp: Path, keep: int, state: dict[str, Any]) -> None:
    path = exp / "checkpoints" / f"epoch-{state['epoch']:04d}.pt"
    _atomic_torch_save(state, path)
    for _, old in _checkpoints(exp)[:-keep]:
        old.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Command line


def cli_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="training data dir (feats.scp, utt2lang)")
    parser.add_argument("--dev", default=None, help="dev data dir for model selection")
    parser.add_argument("--exp", required=True, help="experiment dir to write (exp/<model>)")
    parser.add_argument("--model", default=None,
                        help="hgru | bigru | tdnn | ecapa (default: the config's, else hgru)")
    parser.add_argument("--config", default=None, help="YAML config (sections model, data, "
                        "augment, optim, schedule, train)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE", help="override a setting, e.g. model.hidden1=128 "
                        "optim.lr=2e-3 data.batch_size=16 (batch size is per process); a key "
                        "found in one section only may go without it: epochs=5")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in EXP/checkpoints")
    parser.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    parser.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                        help="end this run after N epochs (continue later with --resume)")


def cli_train(args: argparse.Namespace) -> int:
    train(args.train, args.exp, dev_dir=args.dev, model=args.model, config=args.config,
          overrides=args.overrides, resume=args.resume, seed=args.seed,
          stop_after_epochs=args.stop_after_epochs)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lre.train``: the same options as ``lre train`` (for torchrun)."""
    parser = argparse.ArgumentParser(prog="python -m lre.train",
                                     description="train a language recognition model")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-file", default=None, help="also log to this file")
    cli_train_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_file, args.verbose)
    try:
        return cli_train(args)
    except LreError as e:
        logger.error("%s", e)
        print(f"lre train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
