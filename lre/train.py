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
section.key=value`` overrides; every key is checked against the defaults (:mod:`lre.config`).
Sections: ``model`` (the model's own sizes, :func:`lre.models.default_config`), ``data``
(:class:`lre.dataset.LoaderConfig`; ``batch_size`` is per process), ``augment`` (on-the-fly
frequency warping and SpecAugment masks), ``optim``, ``schedule`` and ``train``; their
defaults and checks are in :mod:`lre.training.config`, the run itself in
:mod:`lre.training`.

Distributed data-parallel training: ``torchrun --nproc_per_node N -m lre.train ...`` (gloo on
CPU, nccl on GPU). Every process reads its share of the batches; only rank 0 logs to file and
writes the experiment dir. One optimizer step sees ``N * data.batch_size`` crops.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lre.training.config import DEFAULTS, load_config_file, parse_overrides, resolve_config
from lre.training.distributed import setup_distributed
from lre.training.loop import evaluate, plot_training_curves
from lre.training.spec_augment import augment_features
from lre.training.stage import TrainResult, log_to_file, run_training
from lre.utils import LreError, setup_logging

__all__ = [
    "DEFAULTS",
    "TrainResult",
    "augment_features",
    "cli_train",
    "cli_train_args",
    "evaluate",
    "load_config_file",
    "main",
    "parse_overrides",
    "plot_training_curves",
    "resolve_config",
    "train",
]

# Not __name__: under `python -m lre.train` that is "__main__", outside the "lre" loggers.
logger = logging.getLogger("lre.train")


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
    dist = setup_distributed()
    try:
        exp = Path(exp_dir)
        log_path = exp / "log" / "train.log" if dist.main else None
        if log_path is not None:
            exp.mkdir(parents=True, exist_ok=True)
        with log_to_file(log_path):
            return run_training(Path(train_dir), exp,
                                None if dev_dir is None else Path(dev_dir), model, config,
                                overrides, resume, seed, stop_after_epochs, dist)
    finally:
        dist.close()


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
    parser.add_argument("--seed", type=int, default=None,
                        help="train.seed, unless --set train.seed gives one")
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
