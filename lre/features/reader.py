"""THE read path of stage-1 features: ``feats.scp`` + ``vad.scp`` -> model input.

Training (:mod:`lre.dataset`), ``lre score`` and the dev checks of training all read
features here. A reader post-processes with one feature config: the data dir's own
``feats_config.json`` by default, or the one a model was trained with (scoring), so the
model sees its training normalisation whatever the data dir says.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kaldiio
import numpy as np

from lre.data.tables import parse_ark_offset, read_table
from lre.features.config import FeatureConfig
from lre.features.pipeline import postprocess, voiced
from lre.utils import LreError

logger = logging.getLogger(__name__)

FEATS_CONFIG = "feats_config.json"


class FeatureReadError(LreError):
    """One utterance's features could not be read."""


def _ark_of(spec: str) -> str:
    ark = parse_ark_offset(spec)
    return ark.ark if ark is not None else spec


def load_feats_config(path: str | os.PathLike) -> FeatureConfig:
    """Read a ``feats_config.json``."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return FeatureConfig.from_dict(json.load(f))
    except OSError as e:
        raise LreError(f"{path}: cannot read feature config ({e.strerror})") from None
    except (LreError, ValueError, TypeError, KeyError) as e:
        raise LreError(f"{path}: not a feature config: {e}") from None


class _StatesOnRead:
    """Encoder states of a data dir whose stage 1 stored only the VAD
    (``--storage=none``): each read decodes the utterance's audio (``wav.scp``,
    ``segments``) and runs the encoder of the data dir's ``feats_config.json``."""

    def __init__(self, data_dir: Path, config: FeatureConfig, utts: Sequence[str]) -> None:
        from lre.data.datadir import DataDir

        self.config = config
        self.datadir = DataDir.load(data_dir)
        self.table = {utt: self.datadir.audio_spec(utt)[0] for utt in utts}

    def wave(self, utt: str) -> np.ndarray:
        from lre.data.datadir import load_utterance

        try:
            return load_utterance(self.datadir, utt, self.config.sample_rate, min_seconds=0.0)
        except LreError as e:
            why = str(e).removeprefix(f"{utt}: ")  # the audio error names the utterance too
            raise FeatureReadError(f"{utt}: cannot read its audio: {why}") from None

    def states(self, utt: str, first: int = 0, stop: int | None = None) -> np.ndarray:
        """States ``[first, stop)`` of ``utt`` (``(stop - first, dim)``): the whole
        utterance exactly as stage 1 would store it, or a span encoded on its own."""
        from lre.features.encoders import STATE_SAMPLES
        from lre.features.pipeline import extract

        wave = self.wave(utt)
        if first or stop is not None:
            wave = wave[first * STATE_SAMPLES: None if stop is None else stop * STATE_SAMPLES]
        states, _ = extract(wave, self.config)
        want = None if stop is None else stop - first
        if want is not None and len(states) != want:
            raise FeatureReadError(f"{utt}: states {first}-{stop} of its audio gave "
                                   f"{len(states)} states")
        return states


class FeatureReader:
    """Post-processed features of one data dir's utterances, by utterance id.

    Reads ``feats.scp`` (+ ``vad.scp``) and, unless ``feature_config`` is given,
    ``feats_config.json``. Without either (features from another tool) the matrices are used
    as they are, after voiced-frame selection when ``vad.scp`` exists. A data dir whose
    encoder states are computed on read (``feats_config.json`` with storage ``none``, no
    ``feats.scp``) has its states encoded from the audio by every read; ``feats_scp`` then
    maps each utterance of ``vad.scp`` to its audio.
    """

    def __init__(self, data_dir: str | os.PathLike,
                 feature_config: FeatureConfig | None = None) -> None:
        self.data_dir = Path(data_dir)
        feats_scp = self.data_dir / "feats.scp"
        vad_scp = self.data_dir / "vad.scp"
        self.vad_scp = read_table(vad_scp) if vad_scp.is_file() else None
        self.on_read: _StatesOnRead | None = None
        own = None if feats_scp.is_file() else self.data_dir_config()
        if own is not None and own.states_on_read and self.vad_scp is not None:
            self.on_read = _StatesOnRead(self.data_dir, own, list(self.vad_scp))
            self.feats_scp = self.on_read.table
        elif not feats_scp.is_file():
            raise LreError(f"{feats_scp}: not found (compute features first: lre features)")
        else:
            self.feats_scp = read_table(feats_scp)
        self.feature_config = feature_config
        if feature_config is None:
            self.feature_config = self.data_dir_config()
            if self.feature_config is None:
                logger.warning("%s: no %s, features are used without CMVN", data_dir,
                               FEATS_CONFIG)
        self.frame_shift = float(getattr(self.feature_config, "frame_shift", 0.01))
        self._fd: dict[str, Any] = {}
        self._fd_pid = os.getpid()

    def data_dir_config(self) -> FeatureConfig | None:
        """The data dir's own ``feats_config.json``, or None when it has none."""
        path = self.data_dir / FEATS_CONFIG
        return load_feats_config(path) if path.is_file() else None

    def __getstate__(self) -> dict[str, Any]:
        # Open file handles stay with the process that opened them.
        state = self.__dict__.copy()
        state["_fd"] = {}
        return state

    def _fds(self) -> dict[str, Any]:
        # A forked loader worker must not share (and seek) its parent's file handles.
        if self._fd_pid != os.getpid():
            self._fd, self._fd_pid = {}, os.getpid()
        return self._fd

    def close(self) -> None:
        for f in self._fd.values():
            f.close()
        self._fd = {}

    def missing_arks(self, utts: Sequence[str]) -> dict[str, str]:
        """``utt -> message`` for utterances whose ark file does not exist."""
        exists: dict[str, bool] = {}
        bad = {}
        tables = [self.vad_scp or {}] if self.on_read else [self.feats_scp, self.vad_scp or {}]
        for utt in utts:
            for table in tables:
                if utt not in table:
                    continue
                ark = _ark_of(table[utt])
                if ark not in exists:
                    exists[ark] = ark.endswith("|") or Path(ark).is_file()
                if not exists[ark]:
                    bad[utt] = f"{utt}: cannot read features: {ark}: no such file"
        return bad

    def _load(self, utt: str, table: dict[str, str], what: str) -> np.ndarray:
        spec = table[utt]
        try:
            return np.asarray(kaldiio.load_mat(spec, fd_dict=self._fds()))
        except Exception as e:  # kaldiio raises many kinds for a damaged ark
            cause = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FeatureReadError(
                f"{utt}: cannot read {what} from {_ark_of(spec)}: {cause}"
            ) from None

    def raw_vad(self, utt: str) -> np.ndarray | None:
        """The VAD decision per original frame, ``(frames,)`` bool, or None without vad.scp."""
        if self.vad_scp is None:
            return None
        if utt not in self.vad_scp:
            raise FeatureReadError(f"{utt}: no entry in vad.scp")
        return voiced(self._load(utt, self.vad_scp, "vad"))

    def raw(self, utt: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Stored features ``(frames, feat_dim)`` and VAD ``(frames,)`` bool (or None),
        checked for shape, finite values and matching lengths."""
        if utt not in self.feats_scp:
            raise FeatureReadError(f"{utt}: no entry in feats.scp")
        if self.on_read is not None:
            feats, ark = self.on_read.states(utt), self.feats_scp[utt]
        else:
            feats = self._load(utt, self.feats_scp, "features")
            ark = _ark_of(self.feats_scp[utt])
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise FeatureReadError(
                f"{utt}: features in {ark} have shape {feats.shape}, expected (frames, dim)"
            )
        if not np.isfinite(feats).all():
            raise FeatureReadError(f"{utt}: features in {ark} hold NaN/inf")
        vad = self.raw_vad(utt)
        if vad is not None and len(vad) != len(feats):
            raise FeatureReadError(
                f"{utt}: vad.scp has {len(vad)} frames but feats.scp has {len(feats)}"
            )
        return feats, vad

    def read(self, utt: str) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(frames', feat_dim)`` float32 after VAD + CMVN, and each kept frame's
        index in the original frame sequence ``(frames',)`` int64."""
        feats, vad = self.raw(utt)
        if self.feature_config is not None:
            return postprocess(feats, vad, self.feature_config)
        index = np.flatnonzero(vad) if vad is not None else np.arange(len(feats))
        return (np.ascontiguousarray(feats[index], dtype=np.float32),
                np.asarray(index, dtype=np.int64))

    def read_span(self, utt: str, start: int, frames: int) -> np.ndarray:
        """``(frames, feat_dim)``: post-processed frames ``[start, start + frames)`` (counted
        after VAD) of ``utt``, moved back to fit when the utterance is shorter. States
        computed on read are encoded for that span of the audio only (CMVN, when on, is
        then over the span)."""
        if self.on_read is None:
            feats, _ = self.read(utt)
            start = max(0, min(start, len(feats) - frames))
            return feats[start: start + frames]
        vad = self.raw_vad(utt)
        index = np.flatnonzero(vad)
        start = max(0, min(start, len(index) - frames))
        kept = index[start: start + frames]
        if len(kept) == 0:
            raise FeatureReadError(f"{utt}: no voiced frames")
        first, stop = int(kept[0]), int(kept[-1]) + 1
        states = self.on_read.states(utt, first, stop)
        if self.feature_config is None:  # pragma: no cover - on-read dirs have a config
            return states[vad[first:stop]]
        return postprocess(states, vad[first:stop], self.feature_config)[0]

    def length_estimate(self, utt: str) -> int:
        """Frames left after VAD without reading the feature matrix (voiced frames in vad.scp,
        else the matrix's frame count)."""
        vad = self.raw_vad(utt)
        if vad is not None:
            return int(vad.sum())
        return int(self._load(utt, self.feats_scp, "features").shape[0])

    @property
    def feat_dim(self) -> int:
        """Feature dimension, from the config or the first matrix."""
        dim = getattr(self.feature_config, "feat_dim", None)
        if dim:
            return int(dim)
        first = next(iter(self.feats_scp))
        return int(self._load(first, self.feats_scp, "features").shape[1])
