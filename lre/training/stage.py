"""One training run, from data dirs and settings to the experiment dir.

The steps: resolve the config (and the checkpoint to resume from), read the languages,
build the model and read its segment geometry (an impossible config fails before any data is
read), make the loaders, optimizer and schedule, restore a checkpoint's states, write the
experiment dir's header files, run the epochs (:mod:`lre.training.loop`) and write
``final.pt``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lre.dataset import make_eval_loader, make_train_loader
from lre.features.reader import FeatureReader
from lre.inference.model_dir import check_feats_compatible
from lre.models.geometry import SegmentGeometry
from lre.training.checkpoint import (
    check_resume_config,
    list_checkpoints,
    load_latest_checkpoint,
    set_rng_state,
)
from lre.training.config import TrainingConfig, resolve_config
from lre.training.distributed import Dist
from lre.training.loop import Progress, TrainingRun, plot_training_curves, run_epochs
from lre.training.optim import make_optimizer, make_scheduler
from lre.utils import LreError, atomic_write_text, limit_threads, seed_everything

__all__ = ["TrainResult", "log_to_file", "run_training"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    exp_dir: Path
    final: Path | None
    best: Path | None
    history: list[dict[str, Any]]
    best_epoch: int | None
    finished: bool


@contextlib.contextmanager
def log_to_file(path: Path | None) -> Iterator[None]:
    """Send the ``lre`` loggers to ``path`` too (and let INFO through) for a while."""
    if path is None:
        yield
        return
    from lre.utils import LOG_FORMAT

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger("lre")
    root.addHandler(handler)
    old_level = root.level if root.getEffectiveLevel() > logging.INFO else None
    if old_level is not None:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        if old_level is not None:
            root.setLevel(old_level)


# --------------------------------------------------------------------------------------------
# Steps before the first epoch


def _config_and_checkpoint(exp: Path, model_name: str | None, config: Any,
                           overrides: Sequence[str], resume: bool, seed: int | None
                           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The resolved config and, with ``resume``, the checkpoint to go on from."""
    cfg = resolve_config(model_name, config, overrides, seed)
    checkpoint = load_latest_checkpoint(exp) if resume else None
    if resume and checkpoint is None:
        logger.info("%s: no checkpoint to resume from, starting a new run", exp / "checkpoints")
    if not resume and list_checkpoints(exp):
        raise LreError(f"{exp / 'checkpoints'}: holds checkpoints of an earlier run; pass "
                       "--resume to continue it, or use a new --exp dir")
    if checkpoint is not None:
        check_resume_config(checkpoint["config"], cfg)
    return cfg, checkpoint


def _languages(data_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Languages of the utterances that have features, C-sorted, and the utt2lang map."""
    from lre.data.tables import c_sorted, read_table

    if not (data_dir / "utt2lang").is_file():
        raise LreError(f"{data_dir / 'utt2lang'}: not found")
    utt2lang = read_table(data_dir / "utt2lang")
    feats = FeatureReader(data_dir).feats_scp  # names feats.scp when there are no features
    return c_sorted({lang for utt, lang in utt2lang.items() if utt in feats}), utt2lang


def _training_languages(train_dir: Path, dev_dir: Path | None,
                        checkpoint: dict[str, Any] | None) -> list[str]:
    """The output languages; dev and the checkpoint (when resuming) must agree with them."""
    langs, _ = _languages(train_dir)
    if len(langs) < 2:
        raise LreError(f"{train_dir / 'utt2lang'}: needs at least 2 languages with features, "
                       f"found {len(langs)}")
    if checkpoint is not None and checkpoint["langs"] != langs:
        raise LreError(f"{train_dir}: languages differ from the checkpoint's "
                       f"({', '.join(checkpoint['langs'])}); cannot resume")
    if dev_dir is not None:
        dev_langs, utt2lang = _languages(dev_dir)
        unknown = [lang for lang in dev_langs if lang not in langs]
        if unknown:
            n = sum(1 for lang in utt2lang.values() if lang in unknown)
            raise LreError(f"{dev_dir / 'utt2lang'}: language(s) not in the training data: "
                           f"{', '.join(unknown)} ({n} utterances)")
    return langs


def _check_dev_features(dev: Path, train: FeatureReader) -> None:
    """Dev features must have the training features' dimension (and should be the same)."""
    reader = FeatureReader(dev)
    if reader.feat_dim != train.feat_dim:
        raise LreError(f"{dev / 'feats.scp'}: {reader.feat_dim}-dim features, but the training "
                       f"features are {train.feat_dim}-dim")
    if reader.feature_config is not None and train.feature_config is not None:
        check_feats_compatible(train.feature_config, reader.feature_config, str(dev))


def _use_bf16(dist: Dist, precision: str) -> bool:
    """bf16 autocast on a GPU that has it, unless ``train.precision`` says fp32."""
    cuda = dist.device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    bf16 = cuda and precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16:
        logger.warning("train.precision bf16 needs a GPU with bf16: training in fp32")
    return bf16


def _build_model(settings: TrainingConfig, feat_dim: int, num_langs: int,
                 frame_shift: float = 0.01) -> torch.nn.Module:
    from lre.models import build_model, frame_rate_config

    name = settings.model_name
    try:
        sizes = frame_rate_config(name, settings.model_sizes, frame_shift)
        return build_model(name, feat_dim, num_langs, sizes)
    except LreError:
        raise
    except (ValueError, TypeError, KeyError, AssertionError, RuntimeError) as e:
        raise LreError(f"model '{name}': impossible config: {e}") from None


def _check_runs(model: torch.nn.Module, name: str, feat_dim: int) -> None:
    """One forward pass on 10 s of zeros, so that a config whose sizes do not fit together
    fails with one line before any data is read."""
    frames = max(1000, 4 * int(getattr(model, "min_frames", 0) or 0))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, frames, feat_dim, device=device),
                  torch.tensor([frames], dtype=torch.long, device=device))
    except Exception as e:  # a geometry that does not fit crashes somewhere inside torch
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LreError(f"model '{name}': this config cannot run on a 10 s input ({cause}); "
                       "check the window/segment sizes") from None
    finally:
        model.train(was_training)


def _model_and_geometry(settings: TrainingConfig, reader: FeatureReader, num_langs: int
                        ) -> tuple[torch.nn.Module, SegmentGeometry]:
    """The model for the training features, and how it cuts them into segments."""
    net = _build_model(settings, reader.feat_dim, num_langs, reader.frame_shift)
    _check_runs(net, settings.model_name, reader.feat_dim)
    geometry = net.geometry(reader.frame_shift)
    logger.info("model %s: %d parameters, segments of %d frames every %d frames (%.2f s every "
                "%.2f s)", settings.model_name, sum(p.numel() for p in net.parameters()),
                geometry.span, geometry.hop, geometry.span * geometry.frame_shift,
                geometry.hop * geometry.frame_shift)
    return net, geometry


def _build_run(cfg: dict[str, Any], exp: Path, train_dir: Path, dev_dir: Path | None,
               langs: list[str], dist: Dist) -> TrainingRun:
    """Model, loaders, optimizer, schedule and weight average of a new run."""
    settings = TrainingConfig.from_dict(cfg)
    t = settings.train
    seed_everything(t.seed)
    bf16 = _use_bf16(dist, t.precision)
    # The feature reader knows the dimension; build the model and read its geometry first
    # so that an impossible config fails before any data is read.
    reader = FeatureReader(train_dir)
    if dev_dir is not None:
        _check_dev_features(dev_dir, reader)
    net, geometry = _model_and_geometry(settings, reader, len(langs))
    if dist.active:  # the same initial weights everywhere, then each its own dropout
        seed_everything(t.seed + 7919 * dist.rank)

    lang2id = {lang: i for i, lang in enumerate(langs)}
    cuda = dist.device.type == "cuda"
    train_loader, sampler = make_train_loader(
        train_dir, lang2id, geometry, settings.data, seed=t.seed, rank=dist.rank,
        world_size=dist.world_size, pin_memory=cuda, reader=reader)
    dev_loader = None if dev_dir is None else make_eval_loader(
        dev_dir, lang2id, settings.data, rank=dist.rank, world_size=dist.world_size,
        pin_memory=cuda)

    net.to(dist.device)
    model: torch.nn.Module = net
    if dist.active:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dist.device.index] if cuda else None)
    optimizer = make_optimizer(net, settings.optim)
    scheduler = make_scheduler(optimizer, settings.schedule, t.epochs, len(sampler))
    return TrainingRun(
        cfg=cfg, settings=settings, exp=exp, langs=langs,
        dirs={"train_dir": str(train_dir), "dev_dir": None if dev_dir is None else str(dev_dir)},
        dist=dist, net=net, model=model, train_loader=train_loader, sampler=sampler,
        dev_loader=dev_loader, optimizer=optimizer, scheduler=scheduler,
        loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=settings.optim.label_smoothing),
        average=(torch.optim.swa_utils.AveragedModel(net, use_buffers=True)
                 if t.average_last else None),
        bf16=bf16)


def _restore(run: TrainingRun, checkpoint: dict[str, Any]) -> None:
    """Weights, optimizer, schedule, sampler, average, RNG and progress of a checkpoint."""
    run.net.load_state_dict(checkpoint["model"])
    if run.average is not None and checkpoint.get("average") is not None:
        run.average.load_state_dict(checkpoint["average"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.sampler.load_state_dict(checkpoint["sampler"])
    rng, dist = checkpoint["rng"], run.dist
    if len(rng) != dist.world_size:
        logger.warning("checkpoint from %d process(es), now %d: RNG streams differ from the "
                       "interrupted run", len(rng), dist.world_size)
    set_rng_state(rng[dist.rank % len(rng)])
    run.progress = Progress.from_state(checkpoint["progress"])


def _write_experiment_header(run: TrainingRun, train_dir: Path) -> None:
    """config.yaml, lang2id and feats_config.json of the experiment dir (rank 0)."""
    from lre.data.tables import write_table

    exp = run.exp
    atomic_write_text(exp / "config.yaml", yaml.safe_dump(run.cfg, sort_keys=False))
    write_table(exp / "lang2id", {lang: i for i, lang in enumerate(run.langs)})
    feats_cfg = train_dir / "feats_config.json"
    if feats_cfg.is_file():
        atomic_write_text(exp / "feats_config.json", feats_cfg.read_text(encoding="utf-8"))
    logger.info("training %s on %s (%d languages, %d utterances), dev %s, %d process(es), "
                "%d steps per epoch", run.settings.model_name, train_dir, len(run.langs),
                len(run.train_loader.dataset), run.dirs["dev_dir"] or "none",
                run.dist.world_size, len(run.sampler))


# --------------------------------------------------------------------------------------------
# After the last epoch


def _final_weights(run: TrainingRun) -> tuple[torch.nn.Module, str, float | None, int]:
    """``(weights, which, their dev accuracy, epochs averaged)`` for final.pt."""
    from lre.models import load_model

    progress, exp = run.progress, run.exp
    weights, dev_acc = run.settings.train.final_weights, (progress.best or {}).get("acc")
    averaged = 0 if run.average is None else int(run.average.n_averaged)
    if weights == "average" and not averaged:
        logger.warning("training ended before epoch %d, the first one averaged: final.pt "
                       "holds the best weights", run.settings.train.first_averaged_epoch)
        weights = "best"
    net = run.net
    if weights == "best" and (exp / "best.pt").is_file():
        net, _ = load_model(exp / "best.pt")
    elif weights == "average":
        net = run.average.module  # type: ignore[union-attr]
        dev_acc = progress.history[-1].get("avg_dev_acc")
        logger.info("final weights: the average of epochs %d-%d",
                    progress.epoch - averaged + 1, progress.epoch)
    elif weights == "last":
        dev_acc = progress.history[-1]["dev_acc"]
    return net, weights, dev_acc, averaged


def _write_final(run: TrainingRun) -> Path:
    """final.pt (the weights ``train.final_weights`` names) and training_curves.png."""
    from lre.models import save_model

    final = run.exp / "final.pt"
    best = run.progress.best or {}
    has_dev = run.dirs["dev_dir"] is not None
    net, weights, dev_acc, averaged = _final_weights(run)
    save_model(final, net, run.langs, extra={
        "epoch": run.progress.epoch, "best_epoch": best.get("epoch"),
        "final_weights": weights, "averaged_epochs": averaged, **run.dirs,
        "dev_acc": dev_acc if has_dev else None,
    })
    plot_training_curves(run.progress.history, run.exp / "training_curves.png")
    logger.info("done: %s (best epoch %s, %s accuracy %.4f)", final, best.get("epoch"),
                "dev" if has_dev else "train", best.get("acc", float("nan")))
    if averaged and has_dev:
        logger.info("averaged weights of the last %d epochs: dev accuracy %.4f", averaged,
                    run.progress.history[-1]["avg_dev_acc"])
    return final


# --------------------------------------------------------------------------------------------
# The run


def run_training(
    train_dir: Path,
    exp: Path,
    dev_dir: Path | None,
    model_name: str | None,
    config: str | os.PathLike | dict | None,
    overrides: Sequence[str],
    resume: bool,
    seed: int | None,
    stop_after_epochs: int | None,
    dist: Dist,
) -> TrainResult:
    """Train in this process (one of ``dist.world_size``); see :func:`lre.train.train`."""
    cfg, checkpoint = _config_and_checkpoint(exp, model_name, config, overrides, resume, seed)
    threads = cfg["train"]["threads"]
    if threads:
        limit_threads(threads)
    langs = _training_languages(train_dir, dev_dir, checkpoint)
    run = _build_run(cfg, exp, train_dir, dev_dir, langs, dist)
    if checkpoint is not None:
        _restore(run, checkpoint)
    # Against this run's settings, so that a finished run resumed with more epochs goes on.
    run.progress.done = run.progress.finished(run.settings.train)
    if dist.main:
        _write_experiment_header(run, train_dir)
    run_epochs(run, stop_after_epochs)
    final = _write_final(run) if run.progress.done and dist.main else None
    dist.barrier()
    return TrainResult(exp, final, exp / "best.pt" if final else None, run.progress.history,
                       (run.progress.best or {}).get("epoch"), run.progress.done)
