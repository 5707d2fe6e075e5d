"""Language recognition models, selected by name, and their model files.

Names: ``"hgru"`` (attention-based hierarchical GRU, the toolkit's model), ``"bigru"`` (flat
BiGRU with attention over frames), ``"tdnn"`` (x-vector TDNN with statistics pooling) and
``"ecapa"`` (SpeechBrain's ECAPA-TDNN; needs ``pip install lre[baselines]``).

A model file (``save_model``) is a plain dict that ``torch.load(..., weights_only=True)``
reads without running code::

    {"format": "lre-model-1", "model_name": str, "model_config": dict, "feat_dim": int,
     "langs": [str, ...], "state_dict": {name: tensor}, "extra": dict}
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path
from typing import Any

from lre.models.base import LidModel, ModelOutput
from lre.utils import LreError, atomic_open

__all__ = [
    "FORMAT",
    "LidModel",
    "ModelOutput",
    "available_models",
    "build_model",
    "default_config",
    "load_model",
    "save_model",
]

FORMAT = "lre-model-1"

# name -> (module, class); imported on first use so that `ecapa` costs nothing until asked for.
_REGISTRY: dict[str, tuple[str, str]] = {
    "hgru": ("lre.models.hgru", "HGRU"),
    "bigru": ("lre.models.bigru", "FlatBiGRU"),
    "tdnn": ("lre.models.tdnn", "XVectorTDNN"),
    "ecapa": ("lre.models.ecapa", "EcapaTDNN"),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(_REGISTRY)


def _model_class(name: str) -> type[LidModel]:
    if name not in _REGISTRY:
        raise LreError(f"unknown model {name!r} (known: {', '.join(_REGISTRY)})")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def default_config(name: str) -> dict[str, Any]:
    """A fresh copy of the default config (all sizes) of model ``name``."""
    return _model_class(name).default_config()


def build_model(name: str, feat_dim: int, num_langs: int,
                config: dict[str, Any] | None = None) -> LidModel:
    """Model ``name`` for ``feat_dim``-dim features and ``num_langs`` languages.

    ``config`` overrides defaults key by key (strings such as ``"128"`` from the command line
    are parsed); unknown keys, wrong types and impossible geometry raise :class:`LreError`.
    """
    return _model_class(name)(feat_dim, num_langs, config)


def frame_rate_config(name: str, config: dict[str, Any], frame_shift: float
                      ) -> dict[str, Any]:
    """``config`` for ``frame_shift``-second frames: every frame count the config leaves at
    its default (set for 10 ms frames) becomes the same duration in these frames, so that
    an HGRU keeps 200 ms windows and 1 s segments on 20 ms encoder states."""
    cls = _model_class(name)
    out = dict(config)
    if abs(frame_shift - 0.01) < 1e-9:
        return out
    for key, seconds in cls.FRAME_SECONDS.items():
        if out.get(key, cls.DEFAULTS[key]) == cls.DEFAULTS[key]:
            out[key] = max(1, round(seconds / frame_shift))
    return out


def _check_plain(value: Any, where: str) -> None:
    """Only values ``torch.load(weights_only=True)`` reads back may go into a model file."""
    import torch

    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise LreError(f"{where}: key {k!r} is not a string")
            _check_plain(v, f"{where}.{k}")
        return
    raise LreError(f"{where}: a {type(value).__name__} cannot be stored in a model file "
                   "(plain numbers, strings, lists, dicts and tensors only)")


def _unwrap(model: Any) -> LidModel:
    """The model inside DistributedDataParallel / torch.compile wrappers."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, LidModel):
            return _unwrap(inner)
    if not isinstance(model, LidModel):
        raise LreError(f"save_model: {type(model).__name__} is not an lre model")
    return model


def save_model(path: str | os.PathLike, model: LidModel, langs: list[str],
               extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` with its language list to ``path`` atomically (see the module doc).

    ``extra`` holds anything else the caller wants kept (epoch, metrics, feature config);
    plain values only, so that the file loads with ``weights_only=True``.
    """
    import torch

    model = _unwrap(model)
    langs = [str(lang) for lang in langs]
    if len(langs) != model.num_langs:
        raise LreError(f"{path}: {len(langs)} languages given for a model with "
                       f"{model.num_langs} outputs")
    extra = dict(extra or {})
    _check_plain(extra, f"{path}: extra")
    payload = {
        "format": FORMAT,
        "model_name": model.name,
        "model_config": dict(model.config),
        "feat_dim": int(model.feat_dim),
        "langs": langs,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_model(path: str | os.PathLike, map_location: Any = "cpu"
               ) -> tuple[LidModel, dict[str, Any]]:
    """Read a :func:`save_model` file (``weights_only=True``: it never runs code).

    Returns ``(model in eval mode, meta)``; ``meta`` is the file's dict without the
    state_dict (``format``, ``model_name``, ``model_config``, ``feat_dim``, ``langs``,
    ``extra``).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise LreError(f"{path}: model file not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LreError(f"{path}: not a readable lre model file ({first[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise LreError(f"{path}: not an lre model file (format {found!r}, "
                       f"expected {FORMAT!r})")
    missing = [k for k in ("model_name", "model_config", "feat_dim", "langs", "state_dict")
               if k not in data]
    if missing:
        raise LreError(f"{path}: model file lacks {', '.join(missing)}")
    name, langs = data["model_name"], list(data["langs"])
    try:
        model = build_model(name, int(data["feat_dim"]), len(langs), data["model_config"])
    except LreError as e:
        raise LreError(f"{path}: {e}") from None
    state = data["state_dict"]
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        detail = " ".join(str(e).split())
        raise LreError(f"{path}: weights do not fit a {name} model with this config "
                       f"({detail[:300]})") from None
    if result.missing_keys or result.unexpected_keys:
        problems = []
        if result.missing_keys:
            problems.append(f"missing {', '.join(result.missing_keys[:3])}")
        if result.unexpected_keys:
            problems.append(f"unexpected {', '.join(result.unexpected_keys[:3])}")
        raise LreError(f"{path}: weights do not fit a {name} model with this config "
                       f"({'; '.join(problems)})")
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    model.eval()
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    meta.setdefault("extra", {})
    return model, meta
