"""The ``lre`` command line: one subcommand per job, each also callable from Python.

Every subcommand lives in the module that does its job. That module defines
``cli_<name>_args(parser)`` to declare the options and ``cli_<name>(args) -> int``
to run it; this file only dispatches, so importing one subcommand never pays for
the others (torch is imported only by the subcommands that need it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lre import __version__
from lre.utils import LreError, setup_logging

#: Commands whose terminal output is their answer: on the terminal they log warnings and
#: errors only (``-v``: everything); a ``--log-file`` still gets their INFO lines.
QUIET_COMMANDS = frozenset({"identify", "segment"})

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("lre.data.datadir", "check a Kaldi data dir and name every problem"),
    "fix": ("lre.data.datadir", "keep the consistent intersection of a data dir"),
    "split": ("lre.data.datadir", "split a data dir by utterance into N parts"),
    "combine": ("lre.data.datadir", "combine data dirs into one"),
    "subset": ("lre.data.datadir", "copy a subset of a data dir's utterances"),
    "prepare": ("lre.data.corpora", "turn a corpus into Kaldi data dirs"),
    "features": ("lre.features.stage", "features (fbank, MFCC, encoder states), VAD of a data dir"),
    "augment": ("lre.augment", "make an augmented copy of a training data dir"),
    "train": ("lre.train", "train a language recognition model"),
    "score": ("lre.score", "score a data dir: scores.tsv, llr.tsv, attention.jsonl"),
    "calibrate": ("lre.calibration", "fit score calibration on dev scores"),
    "fuse": ("lre.fusion", "fuse several models' scores, fitted on dev (a fusion dir)"),
    "openset": ("lre.openset", "fit when to answer 'unknown' on dev and dev_oos"),
    "evaluate": ("lre.evaluate", "metrics, report.md and plots from scores"),
    "identify": ("lre.identify", "identify the language of audio files"),
    "segment": ("lre.segment", "language turns (where each language is spoken) as RTTM"),
    "plot": ("lre.plots", "plot attention over segments, confusion matrices, DET curves"),
    "export": ("lre.export", "export a trained model to ONNX and TorchScript"),
    "pretrained": ("lre.pretrained", "assemble and verify a pretrained encoder (whisper-base)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lre", description="Spoken language recognition.")
    parser.add_argument("--version", action="version", version=f"lre {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-file", default=None, help="also log to this file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module, _name=name)
    return parser


def _log_to_files(message: str) -> None:
    """``message`` into the log files only: the terminal gets it once, from ``main``."""
    record = logging.getLogger("lre").makeRecord("lre", logging.ERROR, __file__, 0, message,
                                                 None, None)
    for handler in logging.root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name first (without -h, which would print help before the
    # command's options exist), then let its module declare its options.
    known, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    if known.command is None:
        if argv and argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0
        parser.print_help()
        return 2
    module = importlib.import_module(known._module)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    getattr(module, f"cli_{known._name}_args")(sub.choices[known.command])
    args = parser.parse_args(argv)
    setup_logging(args.log_file, args.verbose)
    if args._name in QUIET_COMMANDS and not args.verbose:
        for handler in logging.root.handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
    try:
        return int(getattr(module, f"cli_{args._name}")(args) or 0)
    except LreError as e:
        _log_to_files(f"lre {args._name}: error: {e}")
        print(f"lre {args._name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
