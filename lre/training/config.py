"""Training settings: the sections of a training config, their defaults and checks.

Sections: ``model`` (the model's own sizes, :func:`lre.models.default_config`, plus its
``name``), ``data`` (:class:`lre.dataset.LoaderConfig`; ``batch_size`` is per process),
``optim``, ``schedule``, ``augment`` (on-the-fly frequency warping and SpecAugment masks) and
``train``. :func:`resolve_config` merges defaults <- YAML file <- ``--set`` overrides with
:func:`lre.config.merge`, so every key is checked against the defaults and every value
coerced to its default's type.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lre.config import Section, load_config_file, merge, parse_overrides
from lre.dataset import LoaderConfig
from lre.utils import LreError

__all__ = [
    "DEFAULTS",
    "SECTIONS",
    "AugmentConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainingConfig",
    "check_config",
    "load_config_file",
    "parse_overrides",
    "resolve_config",
]

logger = logging.getLogger(__name__)


@dataclass
class OptimConfig(Section):
    """The ``optim:`` section: optimizer and loss."""

    NAME: ClassVar[str] = "optim"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"name": ("adam", "adamw")}

    name: str = "adam"
    lr: float = 0.001
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1.0e-8
    grad_clip: float = 5.0  # max gradient norm; 0 = off
    label_smoothing: float = 0.0
    # Weight of an auxiliary loss: the classifier applied to every segment on its own (the
    # per-segment posteriors), averaged over real segments. It gives the lower levels a
    # short path to the labels.
    segment_loss: float = 0.0

    def check(self, source: str) -> None:
        self.require(source, [
            (self.lr > 0, "lr", "must be > 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1/beta2", "must be in [0, 1)"),
            (self.eps > 0, "eps", "must be > 0"),
            (self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 = off)"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)"),
            (self.segment_loss >= 0, "segment_loss", "must be >= 0"),
        ])


@dataclass
class ScheduleConfig(Section):
    """The ``schedule:`` section: linear warm-up, then a decay of the learning rate."""

    NAME: ClassVar[str] = "schedule"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "decay": ("cosine", "exponential", "none")}

    warmup_epochs: float = 1.0  # linear warm-up from lr / warmup steps to lr
    decay: str = "cosine"
    min_lr_ratio: float = 0.01  # floor of the decay, as a fraction of lr
    gamma: float = 0.9  # exponential decay per epoch

    def check(self, source: str) -> None:
        self.require(source, [
            (self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]"),
            (0 < self.gamma <= 1, "gamma", "must be in (0, 1]"),
        ])


@dataclass
class AugmentConfig(Section):
    """The ``augment:`` section: per training crop, on the fly (SpecAugment; VTLP-like
    warping of the mel axis)."""

    NAME: ClassVar[str] = "augment"

    freq_warp: float = 0.0  # scale the mel axis by a random factor in [1 - w, 1 + w]
    freq_masks: int = 0  # bands of feature dims set to 0 (the mean after CMVN)
    freq_mask_width: int = 8  # widest band, in dims
    time_masks: int = 0  # spans of frames set to 0
    time_mask_width: int = 20  # longest span, in frames

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        return self.freq_warp > 0 or self.freq_masks > 0 or self.time_masks > 0

    def check(self, source: str) -> None:
        self.require(source, [
            (0 <= self.freq_warp < 0.5, "freq_warp", "must be in [0, 0.5)"),
            (self.freq_masks >= 0 and self.time_masks >= 0, "freq_masks/time_masks",
             "must be >= 0"),
            (self.freq_mask_width >= 1 and self.time_mask_width >= 1,
             "freq_mask_width/time_mask_width", "must be >= 1"),
        ])


@dataclass
class TrainConfig(Section):
    """The ``train:`` section: epochs, model selection, checkpoints, precision."""

    NAME: ClassVar[str] = "train"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "select_by": ("accuracy", "loss"),
        "final_weights": ("best", "last", "average"),
        "precision": ("auto", "bf16", "fp32"),
    }

    epochs: int = 30
    patience: int = 0  # stop after this many epochs without a better dev score; 0 = never
    select_by: str = "accuracy"  # what makes best.pt
    final_weights: str = "best"  # the weights final.pt holds
    # Average the weights at the end of each of the last N epochs (0 = off), as in
    # stochastic weight averaging; the average is scored on dev every epoch it changes.
    average_last: int = 0
    keep_checkpoints: int = 3
    seed: int = 0
    precision: str = "auto"  # auto: bf16 on a GPU that has it
    threads: int = 0  # torch CPU threads; 0 = torch's default
    progress: bool = True  # tqdm bar per epoch

    def check(self, source: str) -> None:
        self.require(source, [
            (self.epochs >= 1, "epochs", "must be >= 1"),
            (self.patience >= 0, "patience", "must be >= 0 (0 = no early stopping)"),
            (self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1"),
            (self.average_last >= 0, "average_last", "must be >= 0 (0 = off)"),
            (self.final_weights != "average" or self.average_last >= 1, "final_weights",
             "average needs train.average_last >= 1"),
            (self.threads >= 0, "threads", "must be >= 0"),
        ])

    @property
    def first_averaged_epoch(self) -> int:
        """The first epoch whose weights go into the average."""
        return self.epochs - self.average_last + 1


#: The typed sections after ``model``, in the order a config file lists them.
SECTIONS: dict[str, type[Section]] = {
    "data": LoaderConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
}

#: Built-in training settings; the ``model`` section is filled from the model's defaults.
DEFAULTS: dict[str, dict[str, Any]] = {name: cls().to_dict() for name, cls in SECTIONS.items()}


@dataclass(frozen=True)
class TrainingConfig:
    """A resolved training config, every section typed (``model`` stays a dict: each model
    has its own keys)."""

    model: dict[str, Any]
    data: LoaderConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    augment: AugmentConfig
    train: TrainConfig

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], source: str = "config") -> TrainingConfig:
        """Typed sections of a config dict (as :func:`resolve_config` returns it)."""
        return cls(model=dict(cfg["model"]), **{
            name: section.from_dict(cfg[name], source) for name, section in SECTIONS.items()})

    @property
    def model_name(self) -> str:
        return str(self.model["name"])

    @property
    def model_sizes(self) -> dict[str, Any]:
        """The model section without its name: what :func:`lre.models.build_model` takes."""
        return {k: v for k, v in self.model.items() if k != "name"}


def _model_section(name: str) -> dict[str, Any]:
    """The ``model`` section's defaults: ``name`` and the model's own sizes."""
    from lre.models import default_config

    try:
        return {"name": name, **copy.deepcopy(dict(default_config(name)))}
    except LreError:
        raise
    except (KeyError, ValueError) as e:
        raise LreError(f"model '{name}': unknown model ({e})") from None


def _place_bare_keys(sets: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Move ``--set epochs=5`` to ``train.epochs`` when exactly one section has the key."""
    for key in [k for k in sets if k not in cfg]:
        homes = [section for section, values in cfg.items() if key in values]
        if len(homes) > 1:
            raise LreError(f"--set {key}: ambiguous, say which: "
                           + ", ".join(f"{h}.{key}" for h in homes))
        if homes:
            sets.setdefault(homes[0], {})[key] = sets.pop(key)


def _read_user_config(config: str | os.PathLike | Mapping | None) -> tuple[str, dict]:
    """``(source name for messages, the config's sections)``."""
    if isinstance(config, Mapping):
        return "config", copy.deepcopy(dict(config))
    if config is not None:
        return str(config), load_config_file(config)
    return "config", {}


def _model_name(model: str | None, user: dict, sets: dict, source: str) -> str:
    """``--model`` wins over ``--set model.name``, which wins over the file's; else hgru."""
    file_model = user.get("model") if isinstance(user.get("model"), dict) else {}
    set_model = sets.get("model") if isinstance(sets.get("model"), dict) else {}
    name = model or set_model.get("name") or file_model.get("name") or "hgru"
    if model and file_model.get("name") not in (None, model):
        logger.info("--model %s replaces model.name %s of %s", model, file_model["name"], source)
    return str(name)


def resolve_config(
    model: str | None = None,
    config: str | os.PathLike | Mapping | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
) -> dict[str, Any]:
    """The full training config: defaults <- config file (or dict) <- ``seed`` <- ``--set``
    overrides.

    ``model`` (``--model``) wins over the file's ``model.name``. Unknown keys, values of the
    wrong type and out-of-range settings raise :class:`LreError` naming the key. Returns
    plain sections (what ``config.yaml`` holds); :class:`TrainingConfig` types them.
    """
    source, user = _read_user_config(config)
    sets = parse_overrides(overrides)
    name = _model_name(model, user, sets, source)
    cfg: dict[str, Any] = {"model": _model_section(name), **copy.deepcopy(DEFAULTS)}
    _place_bare_keys(sets, cfg)
    for layer_source, layer in ((source, user), ("--set", sets)):
        layer = copy.deepcopy(layer)
        if isinstance(layer.get("model"), dict):
            layer["model"]["name"] = name
        merge(cfg, layer, layer_source)
    # --seed is the run's seed (run.sh gives one to every stage); an explicit
    # --set train.seed says more and wins
    if seed is not None and "seed" not in sets.get("train", {}):
        cfg["train"]["seed"] = int(seed)
    check_config(cfg)
    return cfg


def check_config(cfg: Mapping[str, Any]) -> None:
    """Choice and range checks of the training sections (model sizes are the model's job:
    they are checked when it is built)."""
    for name, section in SECTIONS.items():
        section.from_dict(cfg[name]).validate("config")
