"""Language segmentation: where each language is spoken in a recording.

The model's per-segment posteriors (the timeline of a result record) go through a smoothing
decoder (:mod:`.decoder`) that gives language turns, written as RTTM (:mod:`.rttm`) and
scored against a reference RTTM (:mod:`.scoring`). :mod:`.codeswitch` builds a
code-switched test set (recordings of several languages with a reference RTTM) from a data
dir. ``lre segment`` (:mod:`lre.segment`), ``lre identify --segments`` and
``Identifier.segment`` run it on audio or a scored data dir.
"""

from __future__ import annotations

from lre.inference.records import Turn
from lre.segmentation.decoder import (
    DecoderOptions,
    decode_turns,
    record_turns,
    speech_from_index,
    speech_regions,
)
from lre.segmentation.rttm import read_rttm, write_rttm
from lre.segmentation.scoring import segmentation_metrics

__all__ = [
    "DecoderOptions",
    "Turn",
    "decode_turns",
    "read_rttm",
    "record_turns",
    "segmentation_metrics",
    "speech_from_index",
    "speech_regions",
    "write_rttm",
]
