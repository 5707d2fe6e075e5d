"""A trained model's experiment dir: model file, feature config, calibration.

:func:`load_trained_model` gives everything ``lre score`` and ``lre identify`` need to turn
features into calibrated results: a runner, the languages, the feature config the model was
trained with, and the calibration fitted on dev (when there is one). :func:`load_model_dir`
also loads a fusion dir (:mod:`lre.fusion`: several such models whose scores are fused).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lre.features.reader import FEATS_CONFIG, load_feats_config
from lre.inference.runner import ModelRunner, TorchRunner, with_other_class
from lre.utils import LreError

logger = logging.getLogger(__name__)

CALIBRATION = "calibration.json"


class Calibrator:
    """Applies ``<model_dir>/calibration.json`` to log-posteriors, or nothing without one."""

    def __init__(self, model_dir: str | os.PathLike, langs: list[str]) -> None:
        self.path = Path(model_dir) / CALIBRATION
        self.langs = list(langs)
        self.calibration: Any = None
        if self.path.is_file():
            from lre import calibration as calib

            self.calibration = calib.load_calibration(self.path)
            logger.info("calibration: %s (%s)", self.path, self.calibration["method"])

    @property
    def active(self) -> bool:
        return self.calibration is not None

    def __call__(self, log_post: np.ndarray) -> np.ndarray:
        """``(utts, langs)`` raw log-posteriors -> calibrated log-posteriors."""
        log_post = np.atleast_2d(np.asarray(log_post, dtype=np.float64))
        if self.calibration is None:
            return log_post
        from lre import calibration as calib

        return np.asarray(calib.apply_calibration(self.calibration, log_post, self.langs),
                          dtype=np.float64)


def check_feats_compatible(model_cfg: Any, data_cfg: Any, data_name: str) -> None:
    """Fail when the data dir's features cannot feed the model: kind, dims, framing.

    Other differences (e.g. mel range, dither) are logged as a warning: the features
    still fit but may score worse.
    """
    for attr in ("kind", "feat_dim", "sample_rate", "frame_shift", "frame_length"):
        a, b = getattr(model_cfg, attr), getattr(data_cfg, attr)
        if a != b:
            raise LreError(
                f"{data_name}: features have {attr}={b!r} but the model was trained on "
                f"{attr}={a!r}; recompute them with the model's feats_config.json"
            )
    md, dd = _flatten(model_cfg.to_dict()), _flatten(data_cfg.to_dict())
    # How the states are kept (compressed, float32, computed on read) is not what they are.
    diff = sorted(k for k in md.keys() | dd.keys()
                  if md.get(k) != dd.get(k) and k != "encoder.storage")
    if diff:
        logger.warning("%s: feature options differ from the model's: %s", data_name,
                       ", ".join(diff))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


@dataclass
class TrainedModel:
    """A model loaded from an experiment dir with all it needs to score audio."""

    runner: ModelRunner
    langs: list[str]
    feats_config: Any
    calibrator: Calibrator
    meta: dict


def load_trained_model(
    model_dir: str | os.PathLike, checkpoint: str = "final.pt", device: str = "cpu"
) -> TrainedModel:
    """Load ``<model_dir>/<checkpoint>``, its ``feats_config.json`` and calibration."""
    from lre.models import load_model

    model_dir = Path(model_dir)
    ckpt = Path(checkpoint) if os.path.isabs(checkpoint) else model_dir / checkpoint
    if not ckpt.is_file():
        raise LreError(f"{ckpt}: no such checkpoint (train the model first, or pick "
                       "another with --checkpoint)")
    fc = model_dir / FEATS_CONFIG
    if not fc.is_file():
        raise LreError(f"{fc}: missing; the model dir must hold the feature config it was "
                       "trained with")
    cfg = load_feats_config(fc)  # first: a small file whose errors are the user's to fix
    model, meta = load_model(ckpt, map_location="cpu")
    if int(meta.get("feat_dim", cfg.feat_dim)) != cfg.feat_dim:
        raise LreError(f"{ckpt}: model expects feat_dim={meta['feat_dim']} but {fc} gives "
                       f"{cfg.feat_dim}")
    runner = with_other_class(TorchRunner(model, list(meta["langs"]), device=device))
    langs = list(runner.langs)
    return TrainedModel(
        runner=runner,
        langs=langs,
        feats_config=cfg,
        calibrator=Calibrator(model_dir, langs),
        meta=meta,
    )


def load_model_dir(model_dir: str | os.PathLike, checkpoint: str = "final.pt",
                   device: str = "cpu") -> Any:
    """A model dir as :func:`load_trained_model` loads it, or a fusion dir as
    :func:`lre.fusion.load_fused_model` does: both have ``langs`` and ``calibrator``, and
    :func:`lre.score.run_datadir` runs either."""
    from lre.fusion import is_fusion_dir, load_fused_model

    if is_fusion_dir(model_dir):
        return load_fused_model(model_dir, checkpoint, device=device)
    return load_trained_model(model_dir, checkpoint, device=device)
