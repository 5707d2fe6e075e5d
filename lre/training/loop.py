"""Epochs of a training run: optimizer steps, dev evaluation, weight averaging, and the
per-epoch outputs (best.pt, a checkpoint, metrics.csv, the log line).

:class:`TrainingRun` holds what the epochs work with; :mod:`lre.training.stage` builds it
from the data dirs and the config, and writes ``final.pt`` when the epochs are done.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lre.training.checkpoint import gather_rng, save_checkpoint
from lre.training.config import TrainConfig, TrainingConfig
from lre.training.distributed import Dist
from lre.training.spec_augment import augment_features
from lre.utils import LreError, atomic_open, atomic_write_text

__all__ = [
    "EpochStats",
    "Progress",
    "TrainingRun",
    "evaluate",
    "plot_training_curves",
    "run_epochs",
    "train_epoch",
    "write_metrics_csv",
]

logger = logging.getLogger(__name__)


@dataclass
class EpochStats:
    """Sums over one pass; means are ``loss / count`` and ``correct / count``."""

    loss: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    frames: float = 0.0
    seconds: float = 0.0
    lr: float = 0.0  # the learning rate of the last step

    def reduced(self, dist: Dist) -> EpochStats:
        """The sums over every process (time and learning rate are this process's)."""
        t = dist.all_sum(torch.tensor([self.loss, self.correct, self.count, self.frames],
                                      dtype=torch.float64))
        return EpochStats(*t.tolist(), seconds=self.seconds, lr=self.lr)

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


@dataclass
class Progress:
    """Where training stands: per-epoch metrics, the best epoch so far, early stopping."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "loss", "acc"} of the monitored set
    bad_epochs: int = 0
    done: bool = False

    @property
    def epoch(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    def finished(self, t: TrainConfig) -> bool:
        """All epochs run, or ``patience`` epochs without a better score."""
        return self.epoch >= t.epochs or 0 < t.patience <= self.bad_epochs

    def add(self, row: dict[str, Any], monitor: dict[str, Any], t: TrainConfig) -> bool:
        """Record an epoch; True when it is the best so far."""
        self.history.append(row)
        improved = self.best is None or (
            monitor["loss"] < self.best["loss"] if t.select_by == "loss"
            # Accuracy ties (common once it reaches 100%) are broken by the loss.
            else (monitor["acc"], -monitor["loss"]) > (self.best["acc"], -self.best["loss"]))
        if improved:
            self.best, self.bad_epochs = monitor, 0
        else:
            self.bad_epochs += 1
        self.done = self.finished(t)
        return improved

    def state(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
                "done": self.done}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        return cls(list(state["history"]), state["best"], state["bad_epochs"], state["done"])


@dataclass
class TrainingRun:
    """What the epochs of one run work with (every process has its own)."""

    cfg: dict[str, Any]  # the resolved config, as config.yaml and checkpoints hold it
    settings: TrainingConfig
    exp: Path
    langs: list[str]
    dirs: dict[str, str | None]  # train_dir, dev_dir: recorded in the model files
    dist: Dist
    net: torch.nn.Module
    model: torch.nn.Module  # ``net``, wrapped for DDP when there are several processes
    train_loader: Any
    sampler: Any
    dev_loader: Any | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    # The running mean of the end-of-epoch weights over the last average_last epochs (batch
    # norm statistics averaged alike); every process keeps it, as each scores part of dev.
    average: torch.optim.swa_utils.AveragedModel | None
    bf16: bool
    progress: Progress = field(default_factory=Progress)


def _autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _check_batch_errors(batch: Any, bad_feats: str, dist: Dist) -> bool:
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


def _segment_loss(out: Any, labels: torch.Tensor, loss_fn: torch.nn.Module) -> torch.Tensor:
    """``loss_fn`` over every real segment, each labelled with its utterance's language.

    ``out.segment_logits (batch, segments, langs)``, ``out.segment_mask (batch, segments)``,
    ``labels (batch,)``.
    """
    mask = out.segment_mask
    seg_labels = labels[:, None].expand_as(mask)[mask]
    return loss_fn(out.segment_logits[mask].float(), seg_labels)


def _train_step(run: TrainingRun, batch: Any, where: str) -> tuple[torch.Tensor, Any]:
    """One optimizer step on ``batch`` (already on the device); ``(loss, model output)``."""
    s = run.settings
    segment_loss = s.optim.segment_loss
    feats = augment_features(batch.feats, batch.lengths, s.augment) if s.augment.active \
        else batch.feats
    with _autocast(run.dist.device, run.bf16):
        out = run.model(feats, batch.lengths, with_segments=segment_loss > 0)
    loss = run.loss_fn(out.logits.float(), batch.labels)
    if segment_loss > 0:
        loss = loss + segment_loss * _segment_loss(out, batch.labels, run.loss_fn)
    if not torch.isfinite(loss):
        raise LreError(f"{where}: the loss is {loss.item()} "
                       "(try a lower optim.lr or check the features)")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if s.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), s.optim.grad_clip)
    run.optimizer.step()
    return loss, out


def train_epoch(run: TrainingRun, desc: str) -> EpochStats:
    """One pass over this process's training batches; the stats summed over processes."""
    from tqdm import tqdm

    run.model.train()
    stats = EpochStats()
    start = time.perf_counter()
    dist = run.dist
    # The bar is for a terminal; in a log file the line per epoch says the same.
    bar = tqdm(total=len(run.train_loader), desc=desc, unit="batch", leave=False,
               dynamic_ncols=True,
               disable=not (run.settings.train.progress and dist.main and sys.stderr.isatty()))
    with bar:
        for step, batch in enumerate(run.train_loader, 1):
            if not _check_batch_errors(batch, run.settings.data.bad_feats, dist):
                continue
            batch.to(dist.device, non_blocking=True)
            loss, out = _train_step(run, batch, f"{desc}, step {step}")
            stats.lr = run.optimizer.param_groups[0]["lr"]
            run.scheduler.step()
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
    model: torch.nn.Module, loader: Any, device: torch.device | str = "cpu", bf16: bool = False,
    bad_feats: str = "error",
) -> EpochStats:
    """Cross-entropy and accuracy of ``model`` on whole utterances (this process's share)."""
    model.eval()
    stats = EpochStats()
    start = time.perf_counter()
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    for batch in loader:
        if not _check_batch_errors(batch, bad_feats, Dist()):
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


def _evaluate_dev(run: TrainingRun, model: torch.nn.Module) -> EpochStats:
    """``model`` on the whole dev set (every process scores its share)."""
    return evaluate(model, run.dev_loader, run.dist.device, run.bf16,
                    run.settings.data.bad_feats).reduced(run.dist)


def _update_average(run: TrainingRun, epoch: int, row: dict[str, Any]) -> None:
    """Add this epoch's weights to the average (inside the window) and score it on dev."""
    if run.average is None or epoch < run.settings.train.first_averaged_epoch:
        return
    run.average.update_parameters(run.net)
    if run.dev_loader is None:
        return
    # A data loader draws a seed from the global RNG: restore it, so that averaging
    # leaves the training itself unchanged.
    with torch.random.fork_rng(devices=[]):
        avg = _evaluate_dev(run, run.average.module)
    row["avg_dev_loss"], row["avg_dev_acc"] = avg.mean_loss, avg.accuracy
    row["seconds"] += avg.seconds


def _run_epoch(run: TrainingRun, epoch: int, desc: str
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one epoch, score dev and the average; ``(metrics row, monitored scores)``."""
    run.sampler.set_epoch(epoch)
    tr = train_epoch(run, desc)
    row: dict[str, Any] = {
        "epoch": epoch, "train_loss": tr.mean_loss, "train_acc": tr.accuracy,
        "dev_loss": None, "dev_acc": None, "lr": tr.lr,
        "seconds": tr.seconds, "frames_per_s": tr.frames / max(tr.seconds, 1e-9),
    }
    monitor = {"epoch": epoch, "loss": tr.mean_loss, "acc": tr.accuracy}
    if run.dev_loader is not None:
        dev = _evaluate_dev(run, run.net)
        row["dev_loss"], row["dev_acc"] = dev.mean_loss, dev.accuracy
        row["seconds"] += dev.seconds
        monitor = {"epoch": epoch, "loss": dev.mean_loss, "acc": dev.accuracy}
    _update_average(run, epoch, row)
    return row, monitor


def _save_epoch(run: TrainingRun, row: dict[str, Any], improved: bool,
                rng_states: list[dict[str, Any]]) -> None:
    """best.pt (when improved), the checkpoint (with every process's RNG state) and
    metrics.csv; rank 0 only."""
    from lre.models import save_model

    epoch, exp = row["epoch"], run.exp
    if improved:  # before the checkpoint, so a resumed run never lacks its best.pt
        save_model(exp / "best.pt", run.net, run.langs, extra={
            "epoch": epoch, **run.dirs, "dev_acc": row["dev_acc"], "dev_loss": row["dev_loss"]})
    save_checkpoint(exp, run.settings.train.keep_checkpoints, {
        "epoch": epoch, "model_name": run.settings.model_name,
        "model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "sampler": run.sampler.state_dict(),
        "rng": rng_states, "progress": run.progress.state(), "config": run.cfg,
        "langs": run.langs,
        "average": None if run.average is None else run.average.state_dict(),
    })
    write_metrics_csv(exp / "metrics.csv", run.progress.history)


def run_epochs(run: TrainingRun, stop_after_epochs: int | None = None) -> None:
    """Epochs until the run is done (or ``stop_after_epochs`` of them in this call)."""
    t = run.settings.train
    epochs_run = 0
    while not run.progress.done:
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            logger.info("stopping after %d epoch(s) as asked; continue with --resume",
                        epochs_run)
            break
        epoch = run.progress.epoch + 1
        desc = f"epoch {epoch}/{t.epochs}"
        row, monitor = _run_epoch(run, epoch, desc)
        improved = run.progress.add(row, monitor, t)
        rng_states = gather_rng(run.dist)  # a collective: every process takes part
        if run.dist.main:
            _save_epoch(run, row, improved, rng_states)
            _log_epoch(desc, row, improved)
            if run.progress.done and epoch < t.epochs:
                logger.info("early stop: no better %s score for %d epochs",
                            "dev" if run.dev_loader is not None else "train",
                            run.progress.bad_epochs)
        run.dist.barrier()
        epochs_run += 1


def _log_epoch(desc: str, row: dict[str, Any], improved: bool) -> None:
    dev = ("" if row["dev_acc"] is None else
           f" | dev loss {row['dev_loss']:.4f} acc {row['dev_acc']:.4f}")
    if row.get("avg_dev_acc") is not None:
        dev += f" | averaged: dev acc {row['avg_dev_acc']:.4f}"
    logger.info("%s: train loss %.4f acc %.4f%s | lr %.3g | %.1f s, %.0f frames/s%s", desc,
                row["train_loss"], row["train_acc"], dev, row["lr"], row["seconds"],
                row["frames_per_s"], " [best]" if improved else "")


_CSV_FIELDS = ["epoch", "train_loss", "train_acc", "dev_loss", "dev_acc", "avg_dev_loss",
               "avg_dev_acc", "lr", "seconds", "frames_per_s"]


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """One row per epoch (empty cells where a figure is missing), written atomically."""
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
