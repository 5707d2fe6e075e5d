"""Corpus preparers: each turns one corpus, as distributed, into Kaldi data dirs.

``lre prepare <corpus> ...`` dispatches to one module per corpus:

    synth         the embedded corpus, synthesized with espeak-ng (no download)
    voxlingua107  VoxLingua107: one folder of WAVs per language code (+ dev/)
    commonvoice   Mozilla Common Voice: per-locale TSV files and clips/*.mp3
    fleurs        FLEURS: <lang>/{train,dev,test}.tsv and audio/<split>/*.wav
    folders       any corpus laid out as <root>/<lang>/**/*.{wav,flac,mp3,ogg}
    kaldi         an existing Kaldi data dir (copied, checked, utt2lang added)
    ktuberling    KTuberling's recorded words (Debian ktuberling-data): real human speech
    codeswitch    recordings that switch language, joined from another data dir's
                  utterances, with a reference RTTM (lre.segmentation.codeswitch)

Each module defines ``HELP``, ``add_arguments(parser)``, ``run(args) -> PrepareReport`` and
a plain function ``prepare_<corpus>(...)`` that does the work.
"""

from __future__ import annotations

import argparse
import importlib

from lre.data.corpora.common import PrepareReport

CORPORA: dict[str, str] = {
    "synth": "lre.data.corpora.synth",
    "voxlingua107": "lre.data.corpora.voxlingua107",
    "commonvoice": "lre.data.corpora.commonvoice",
    "fleurs": "lre.data.corpora.fleurs",
    "folders": "lre.data.corpora.folders",
    "kaldi": "lre.data.corpora.kaldi",
    "ktuberling": "lre.data.corpora.ktuberling",
    "codeswitch": "lre.segmentation.codeswitch",
}

__all__ = [
    "CORPORA",
    "PrepareReport",
    "cli_prepare",
    "cli_prepare_args",
    "prepare",
    "prepare_codeswitch",
    "prepare_commonvoice",
    "prepare_fleurs",
    "prepare_folders",
    "prepare_kaldi",
    "prepare_ktuberling",
    "prepare_synth",
    "prepare_voxlingua107",
]


def _module(corpus: str):
    if corpus not in CORPORA:
        from lre.utils import LreError

        raise LreError(f"unknown corpus '{corpus}' (known: {', '.join(CORPORA)})")
    return importlib.import_module(CORPORA[corpus])


def prepare(corpus: str, *args, **kwargs) -> PrepareReport:
    """Run the preparer of ``corpus`` (e.g. ``prepare("fleurs", src, out, langs=["fi"])``)."""
    return getattr(_module(corpus), f"prepare_{corpus}")(*args, **kwargs)


def __getattr__(name: str):
    # prepare_<corpus> functions, imported on first use.
    if name.startswith("prepare_") and name[8:] in CORPORA:
        return getattr(_module(name[8:]), name)
    raise AttributeError(f"module 'lre.data.corpora' has no attribute {name!r}")


def cli_prepare_args(parser: argparse.ArgumentParser) -> None:
    """``lre prepare <corpus> [options]``: one sub-command per corpus."""
    sub = parser.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    for name in CORPORA:
        module = _module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)


def cli_prepare(args: argparse.Namespace) -> int:
    report = _module(args.corpus).run(args)
    print(report.table())
    return 0
