"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch

from lre.training.config import OptimConfig, ScheduleConfig

__all__ = ["lr_factor", "make_optimizer", "make_scheduler"]


def lr_factor(step: int, warmup: int, total: int, steps_per_epoch: int,
              s: ScheduleConfig) -> float:
    """Learning-rate multiplier after ``step`` optimizer steps: linear warm-up over
    ``warmup`` steps, then the decay (cosine over the ``total`` steps, or exponential per
    epoch), never below ``min_lr_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    if s.decay == "none":
        return 1.0
    if s.decay == "exponential":
        return max(s.min_lr_ratio, s.gamma ** ((step - warmup) / steps_per_epoch))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the model's parameters."""
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
               weight_decay=o.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, epochs: int,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of :func:`lr_factor` for ``epochs`` epochs."""
    warmup = round(schedule.warmup_epochs * steps_per_epoch)
    total = epochs * steps_per_epoch
    # A closure (not an object) so that the schedule comes from the config on resume and
    # only the step count comes from the checkpoint.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total, steps_per_epoch, schedule)
    )
