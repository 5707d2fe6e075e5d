"""Batches of features for training and scoring, read from a Kaldi data dir.

Features come from ``feats.scp`` (and ``vad.scp``) through kaldiio and go through
:func:`lre.features.postprocess` with the data dir's ``feats_config.json`` (voiced-frame
selection and CMVN, on the fly), which also gives each kept frame's index in the original
frame sequence, so times survive VAD.

Training (:func:`make_train_loader`): every utterance gives one random crop per epoch whose
length is a whole number of model segments, between ``crop_min_seconds`` and
``crop_max_seconds``. With the HGRU's default geometry a crop of ``k`` segments has
``100 * k + 10`` frames. Crops of one epoch are sorted by length inside pools of
``bucket_pool`` batches before they are cut into batches, so a batch holds crops of (nearly)
one length and padding stays low. All randomness lives in :class:`TrainBatchSampler`, a pure
function of ``(seed, epoch)``: the same seed gives the same batches whatever the number of
loader workers, and a resumed run continues the same order. Under DDP each process takes
every ``world_size``-th batch; ``batch_size`` is per process.

Scoring (:func:`make_eval_loader`): whole utterances, longest first, batched under a budget of
padded frames; each batch carries the utterance ids and frame index maps.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lre.config import Section
from lre.data.tables import read_table
from lre.features.reader import FeatureReader, FeatureReadError
from lre.models.geometry import SegmentGeometry
from lre.utils import LreError, limit_threads

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# Configuration and geometry


@dataclass
class LoaderConfig(Section):
    """Settings of the data loaders (the ``data:`` section of a training config).

    ``batch_size`` is the number of crops per step *per process*; under DDP with ``N``
    processes one optimizer step sees ``N * batch_size`` crops. ``from_dict`` rejects a key
    that is not a field, naming the closest one (:class:`lre.config.Section`).
    """

    NAME: ClassVar[str] = "data"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "balance": ("none", "lang"),
        "short_utts": ("pad", "skip"),
        "bad_feats": ("error", "skip"),
        "cache": ("auto", "memory", "none"),
    }

    batch_size: int = 32
    crop_min_seconds: float = 2.0
    crop_max_seconds: float = 4.0
    balance: str = "none"  # "none" | "lang": the same number of crops per language per epoch
    short_utts: str = "pad"  # "pad" | "skip": utterances shorter than one segment
    bad_feats: str = "error"  # "error" | "skip": unreadable feats.scp entries
    num_workers: int = 0
    bucket_pool: int = 50  # batches whose crops are sorted by length together
    cache: str = "auto"  # "auto" | "memory" | "none": keep post-processed features in RAM
    cache_max_gb: float = 2.0  # "auto" caches when the features fit in this
    eval_max_frames: int = 60000  # padded frames per scoring batch
    eval_batch_size: int = 64

    def check(self, source: str) -> None:
        """Sizes at least 1, workers >= 0, and ``0 < crop_min_seconds <= crop_max_seconds``."""
        self.require(source, [
            *((getattr(self, name) >= 1, name, "must be at least 1")
              for name in ("batch_size", "bucket_pool", "eval_max_frames", "eval_batch_size")),
            (self.num_workers >= 0, "num_workers", "must be >= 0"),
        ])
        if not 0 < self.crop_min_seconds <= self.crop_max_seconds:
            raise LreError(
                f"{source}: {self.NAME}: crop_min_seconds ({self.crop_min_seconds}) must be "
                f"> 0 and <= crop_max_seconds ({self.crop_max_seconds})"
            )


# --------------------------------------------------------------------------------------------
# Reading features


def _utt2lang(data_dir: Path) -> dict[str, str]:
    path = data_dir / "utt2lang"
    if not path.is_file():
        raise LreError(f"{path}: not found")
    return read_table(path)


def _describe(utts: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(utts[:limit])
    return shown + (f" ... (+{len(utts) - limit} more)" if len(utts) > limit else "")


class _UtteranceStore:
    """The utterances of one data dir a loader uses: lengths after VAD, labels, and
    (optionally) their post-processed features cached in memory."""

    def __init__(
        self,
        reader: FeatureReader,
        utts: Sequence[str],
        labels: Sequence[int],
        cache: str,
        cache_max_gb: float,
        bad_feats: str,
        crops: bool = False,
    ):
        self.reader = reader
        data_dir = reader.data_dir
        self.bad_feats = bad_feats
        self.skipped: dict[str, str] = {}
        keep_utts, keep_labels = [], []
        bad = self.reader.missing_arks(utts)
        for utt, label in zip(utts, labels, strict=True):
            if utt in bad:
                self._bad(bad[utt])
            else:
                keep_utts.append(utt)
                keep_labels.append(label)
        # Caching reads every matrix once (and gives exact lengths); uncached lengths come
        # from vad.scp.
        n_frames = self._num_frames(keep_utts)
        nbytes = sum(n_frames) * self.reader.feat_dim * 4
        # "auto" leaves training states computed on read uncached: each crop is encoded
        # when it is drawn (the reason to compute them on read).
        auto = nbytes <= cache_max_gb * 2**30 and not (crops and reader.on_read is not None)
        self.cached = cache == "memory" or (cache == "auto" and auto)
        self.feats: list[np.ndarray] | None = [] if self.cached else None
        self.index: list[np.ndarray] | None = [] if self.cached else None
        self.utts: list[str] = []
        self.labels: list[int] = []
        self.lengths: list[int] = []
        for utt, label in zip(keep_utts, keep_labels, strict=True):
            try:
                if self.cached:
                    x, idx = self.reader.read(utt)
                    length = len(x)
                else:
                    length = self.reader.length_estimate(utt)
            except FeatureReadError as e:
                self._bad(str(e))
                continue
            if self.cached:
                self.feats.append(x)
                self.index.append(idx)
            self.utts.append(utt)
            self.labels.append(label)
            self.lengths.append(length)
        if self.skipped:
            logger.warning("%s: skipped %d utterance(s) with unreadable features: %s",
                           data_dir, len(self.skipped), _describe(list(self.skipped)))
        logger.info("%s: %d utterances, %d frames after VAD%s", data_dir, len(self.utts),
                    sum(self.lengths), ", cached in memory" if self.cached else "")

    def _num_frames(self, utts: Sequence[str]) -> list[int]:
        from lre.data.datadir import read_int_map

        path = self.reader.data_dir / "utt2num_frames"
        table = read_int_map(path) if path.is_file() else {}
        return [table.get(utt, 1000) for utt in utts]  # unknown: an ordinary 10 s utterance

    def _bad(self, message: str) -> None:
        if self.bad_feats == "error":
            raise FeatureReadError(message)
        self.skipped[message.split(":", 1)[0]] = message

    def select(self, positions: Sequence[int]) -> None:
        """Keep the utterances at ``positions``, in that order."""
        for name in ("utts", "labels", "lengths", "feats", "index"):
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, [values[i] for i in positions])

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cached:
            return self.feats[i], self.index[i]
        return self.reader.read(self.utts[i])

    def crop(self, i: int, start: int, frames: int) -> np.ndarray:
        """Frames ``[start, start + frames)`` after VAD, moved back inside the utterance
        (lengths of uncached utterances are estimates)."""
        if not self.cached:
            return self.reader.read_span(self.utts[i], start, frames)
        feats = self.feats[i]
        start = max(0, min(start, len(feats) - frames))
        return feats[start : start + frames]


# --------------------------------------------------------------------------------------------
# Datasets, batches and collation


@dataclass
class Batch:
    """A padded batch.

    feats: ``(batch, frames, feat_dim)`` float32, zero after each utterance's length.
    lengths: ``(batch,)`` int64 real frames. labels: ``(batch,)`` int64, -1 when unknown.
    utts: utterance ids. frame_index: per utterance, ``(lengths[i],)`` int64 index of each
    frame in the original (pre-VAD) frame sequence. errors: messages of items that could not
    be read (left out of the batch).
    """

    feats: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    utts: list[str]
    frame_index: list[torch.Tensor] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utts)

    def pin_memory(self) -> Batch:
        self.feats = self.feats.pin_memory()
        self.lengths = self.lengths.pin_memory()
        self.labels = self.labels.pin_memory()
        return self

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move the tensors the model needs (feats, lengths, labels) to ``device``."""
        self.feats = self.feats.to(device, non_blocking=non_blocking)
        self.lengths = self.lengths.to(device, non_blocking=non_blocking)
        self.labels = self.labels.to(device, non_blocking=non_blocking)
        return self


@dataclass
class _Item:
    utt: str
    feats: np.ndarray | None
    label: int
    frame_index: np.ndarray | None = None
    error: str | None = None


def collate(items: Sequence[_Item]) -> Batch:
    """Pad items to the longest into a :class:`Batch`; unreadable items go to ``errors``."""
    good = [it for it in items if it.error is None]
    errors = [it.error for it in items if it.error is not None]
    dim = good[0].feats.shape[1] if good else 0
    longest = max((len(it.feats) for it in good), default=0)
    feats = torch.zeros(len(good), longest, dim, dtype=torch.float32)
    for i, it in enumerate(good):
        feats[i, : len(it.feats)] = torch.from_numpy(it.feats)
    return Batch(
        feats=feats,
        lengths=torch.tensor([len(it.feats) for it in good], dtype=torch.long),
        labels=torch.tensor([it.label for it in good], dtype=torch.long),
        utts=[it.utt for it in good],
        frame_index=[torch.from_numpy(it.frame_index) for it in good if it.frame_index is not None],
        errors=errors,
    )


def _labels_for(data_dir: Path, utts: Sequence[str], lang2id: dict[str, int] | None) -> list[int]:
    if lang2id is None:
        return [-1] * len(utts)
    utt2lang = _utt2lang(data_dir)
    return [lang2id[utt2lang[u]] if utt2lang.get(u) in lang2id else -1 for u in utts]


class TrainDataset(Dataset):
    """Random crops of a training data dir; items are addressed by ``(utt index, start,
    frames)`` triples from :class:`TrainBatchSampler`.

    Utterances of languages not in ``lang2id`` are left out; so are those without features.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        lang2id: dict[str, int],
        geometry: SegmentGeometry,
        config: LoaderConfig,
        reader: FeatureReader | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.geometry = geometry
        self.config = config
        reader = reader or FeatureReader(self.data_dir)
        utt2lang = _utt2lang(self.data_dir)
        no_feats = sorted(u for u in utt2lang if u not in reader.feats_scp)
        if no_feats:
            logger.warning("%s: %d utterance(s) in utt2lang have no features, left out: %s",
                           data_dir, len(no_feats), _describe(no_feats))
        utts = sorted(u for u in utt2lang if u in reader.feats_scp and utt2lang[u] in lang2id)
        self.store = _UtteranceStore(
            reader, utts, [lang2id[utt2lang[u]] for u in utts],
            config.cache, config.cache_max_gb, config.bad_feats, crops=True,
        )
        self._apply_short_policy()
        if not self.store.utts:
            raise LreError(f"{data_dir}: no usable training utterances")

    def _apply_short_policy(self) -> None:
        span = self.geometry.span
        pairs = list(zip(self.store.utts, self.store.lengths, strict=True))
        empty = [u for u, n in pairs if n == 0]
        short = [u for u, n in pairs if 0 < n < span]
        if empty:
            logger.warning("%s: skipped %d utterance(s) with no voiced frames: %s",
                           self.data_dir, len(empty), _describe(empty))
        if short and self.config.short_utts == "skip":
            logger.warning("%s: skipped %d utterance(s) shorter than one segment (%d frames): %s",
                           self.data_dir, len(short), span, _describe(short))
        elif short:
            logger.info("%s: %d utterance(s) shorter than one segment (%d frames) are padded",
                        self.data_dir, len(short), span)
        min_len = span if self.config.short_utts == "skip" else 1
        self.store.select([i for i, n in enumerate(self.store.lengths) if n >= min_len])

    @property
    def utts(self) -> list[str]:
        return self.store.utts

    @property
    def labels(self) -> list[int]:
        return self.store.labels

    @property
    def lengths(self) -> list[int]:
        return self.store.lengths

    @property
    def feat_dim(self) -> int:
        return self.store.reader.feat_dim

    def __len__(self) -> int:
        return len(self.store.utts)

    def __getitem__(self, request: tuple[int, int, int]) -> _Item:
        i, start, frames = request
        utt = self.store.utts[i]
        try:
            crop = self.store.crop(i, start, frames)
        except FeatureReadError as e:
            return _Item(utt, None, self.store.labels[i], error=str(e))
        return _Item(utt, crop, self.store.labels[i])


class EvalDataset(Dataset):
    """Whole utterances of a data dir, longest first (items by position)."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        lang2id: dict[str, int] | None = None,
        utts: Sequence[str] | None = None,
        config: LoaderConfig | None = None,
    ):
        self.data_dir = Path(data_dir)
        config = config or LoaderConfig()
        reader = FeatureReader(self.data_dir)
        if utts is None:
            utts = sorted(reader.feats_scp)
        else:
            missing = [u for u in utts if u not in reader.feats_scp]
            if missing:
                logger.warning("%s: %d utterance(s) have no features, left out: %s",
                               data_dir, len(missing), _describe(missing))
            utts = [u for u in utts if u in reader.feats_scp]
        self.store = _UtteranceStore(
            reader, utts, _labels_for(self.data_dir, utts, lang2id),
            config.cache, config.cache_max_gb, config.bad_feats,
        )
        empty = [u for u, n in zip(self.store.utts, self.store.lengths, strict=True) if n == 0]
        if empty:
            logger.warning("%s: left out %d utterance(s) with no voiced frames: %s",
                           data_dir, len(empty), _describe(empty))
            self.store.skipped.update({u: f"{u}: no voiced frames" for u in empty})
        lengths = self.store.lengths
        self.store.select(sorted((i for i, n in enumerate(lengths) if n > 0),
                                 key=lambda i: (-lengths[i], i)))

    @property
    def utts(self) -> list[str]:
        return self.store.utts

    @property
    def lengths(self) -> list[int]:
        return self.store.lengths

    @property
    def skipped(self) -> dict[str, str]:
        """``utt -> reason`` of utterances left out (unreadable, no voiced frames)."""
        return self.store.skipped

    def __len__(self) -> int:
        return len(self.store.utts)

    def __getitem__(self, i: int) -> _Item:
        utt = self.store.utts[i]
        try:
            feats, index = self.store.get(i)
        except FeatureReadError as e:
            return _Item(utt, None, self.store.labels[i], error=str(e))
        return _Item(utt, feats, self.store.labels[i], frame_index=index)


# --------------------------------------------------------------------------------------------
# Samplers


class TrainBatchSampler:
    """Batches of crop requests ``(utt index, start frame, frames)`` for one epoch at a time.

    The batches of epoch ``e`` depend only on ``(seed, e)`` and the data, never on earlier
    iteration, so :meth:`state_dict` needs just the epoch. Under DDP, rank ``r`` of ``w``
    takes batches ``r, r + w, ...`` of the shared plan, padded by repeating its first batches
    so that every rank takes the same number of steps.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        labels: Sequence[int],
        geometry: SegmentGeometry,
        batch_size: int,
        crop_segments: tuple[int, int] = (2, 4),
        balance: str = "none",
        bucket_pool: int = 50,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 1 <= crop_segments[0] <= crop_segments[1]:
            raise LreError(f"crop lengths: {crop_segments} is not a range of whole segments")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.geometry = geometry
        self.batch_size = batch_size
        self.crop_segments = crop_segments
        self.balance = balance
        self.bucket_pool = bucket_pool
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._plan: tuple[int, list[list[tuple[int, int, int]]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "seed": self.seed, "num_utts": len(self.lengths)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("num_utts", len(self.lengths)) != len(self.lengths):
            logger.warning("the training data changed since the checkpoint (%d -> %d "
                           "utterances): batches differ from the interrupted run",
                           state["num_utts"], len(self.lengths))
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])

    def _epoch_items(self, rng: np.random.Generator) -> np.ndarray:
        n = len(self.lengths)
        if self.balance == "none":
            return rng.permutation(n)
        langs = np.unique(self.labels)
        quota = math.ceil(n / len(langs))
        picks = []
        for lang in langs:
            members = np.flatnonzero(self.labels == lang)
            reps = math.ceil(quota / len(members))
            stream = np.concatenate([rng.permutation(members) for _ in range(reps)])
            picks.append(stream[:quota])
        return rng.permutation(np.concatenate(picks))

    def plan(self, epoch: int | None = None) -> list[list[tuple[int, int, int]]]:
        """All batches of ``epoch`` (default: the current one) for this rank."""
        epoch = self.epoch if epoch is None else epoch
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        rng = np.random.default_rng([self.seed, epoch])
        items = self._epoch_items(rng)
        lo, hi = self.crop_segments
        wanted = rng.integers(lo, hi + 1, size=len(items))
        lengths = self.lengths[items]
        available = self.geometry.segments(lengths)
        # Whole segments, as many as wanted and available; shorter utterances whole (padded).
        whole = self.geometry.frames(np.minimum(wanted, available))
        frames = np.where(available >= 1, whole, lengths)
        starts = (rng.random(len(items)) * (lengths - frames + 1)).astype(np.int64)
        requests = list(zip(items.tolist(), starts.tolist(), frames.tolist(), strict=True))
        batches: list[list[tuple[int, int, int]]] = []
        pool = self.batch_size * self.bucket_pool
        for p in range(0, len(requests), pool):
            pool_requests = sorted(requests[p : p + pool], key=lambda r: -r[2])
            cut = [pool_requests[b : b + self.batch_size]
                   for b in range(0, len(pool_requests), self.batch_size)]
            if len(cut) > 1 and len(cut[-1]) == 1:
                cut[-2].extend(cut.pop())  # a batch of one breaks batch statistics
            batches.extend(cut)
        order = rng.permutation(len(batches))
        batches = [batches[i] for i in order]
        if self.world_size > 1:
            total = math.ceil(len(batches) / self.world_size) * self.world_size
            batches = [batches[i % len(batches)] for i in range(total)]
            batches = batches[self.rank :: self.world_size]
        self._plan = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return iter(self.plan())

    def __len__(self) -> int:
        return len(self.plan())


def eval_batches(
    lengths: Sequence[int], max_frames: int, max_batch: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """Batches of item positions in order (longest first) with at most ``max_frames`` padded
    frames and ``max_batch`` items each; under DDP every ``world_size``-th batch."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i, n in enumerate(lengths):
        longest = lengths[current[0]] if current else n
        if current and (len(current) >= max_batch or (len(current) + 1) * longest > max_frames):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches[rank::world_size]


# --------------------------------------------------------------------------------------------
# Loaders


def _worker_init(_: int) -> None:
    # Loader workers read, copy (and may run an encoder): one thread each leaves the
    # cores to the model and to each other.
    limit_threads(1)


def make_train_loader(
    data_dir: str | os.PathLike,
    lang2id: dict[str, int],
    geometry: SegmentGeometry,
    config: LoaderConfig,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    reader: FeatureReader | None = None,
) -> tuple[DataLoader, TrainBatchSampler]:
    """A loader of training crops and its sampler (call ``sampler.set_epoch`` each epoch).

    ``reader``: an already opened :class:`FeatureReader` of ``data_dir`` to use.
    """
    config.validate()
    dataset = TrainDataset(data_dir, lang2id, geometry, config, reader=reader)
    crop = (geometry.seconds_to_segments(config.crop_min_seconds),
            geometry.seconds_to_segments(config.crop_max_seconds))
    sampler = TrainBatchSampler(
        dataset.lengths, dataset.labels, geometry, config.batch_size, crop,
        balance=config.balance, bucket_pool=config.bucket_pool, seed=seed,
        rank=rank, world_size=world_size,
    )
    logger.info("training crops: %d-%d segments (%d-%d frames), batch size %d per process",
                crop[0], crop[1], geometry.frames(crop[0]), geometry.frames(crop[1]),
                config.batch_size)
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=config.num_workers,
        worker_init_fn=_worker_init if config.num_workers else None, pin_memory=pin_memory,
    )
    return loader, sampler


def make_eval_loader(
    data_dir: str | os.PathLike,
    lang2id: dict[str, int] | None = None,
    config: LoaderConfig | None = None,
    utts: Sequence[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader of whole utterances, longest first; each :class:`Batch` has utterance ids and
    frame index maps. ``loader.dataset.skipped`` lists utterances left out."""
    config = config or LoaderConfig()
    config.validate()
    dataset = EvalDataset(data_dir, lang2id, utts, config)
    batches = eval_batches(dataset.lengths, config.eval_max_frames, config.eval_batch_size,
                           rank, world_size)
    return DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, num_workers=config.num_workers,
        worker_init_fn=_worker_init if config.num_workers else None, pin_memory=pin_memory,
    )
