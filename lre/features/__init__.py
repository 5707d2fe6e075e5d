"""Features: Kaldi-compatible fbank / MFCC / MFCC+SDC, energy VAD, CMVN, and stage 1.

    kaldi.py     the fbank/MFCC front end (Kaldi's compute-*-feats, option by option)
    vad.py       energy VAD (Kaldi's compute-vad)
    cmvn.py      per-utterance CMVN and sliding CMN
    sdc.py       shifted delta cepstra
    config.py    FeatureConfig: what a feature set is, read from --option=value files
    pipeline.py  THE extract -> VAD -> CMVN -> frame-to-time map, used by every consumer
    reader.py    THE read path of feats.scp / vad.scp
    stage.py     ``lre features``: parallel jobs over a data dir

The names below are the public API; import them from here.
"""

from lre.features.cmvn import CmvnOptions
from lre.features.config import FeatureConfig, read_conf
from lre.features.kaldi import KaldiOptions, extract_with_energy
from lre.features.pipeline import extract, postprocess, utterance_seed
from lre.features.sdc import SdcOptions
from lre.features.stage import (
    FeatureReport,
    cli_features,
    cli_features_args,
    compute_features,
    run_job,
)
from lre.features.vad import VadOptions, energy_vad

__all__ = [
    "CmvnOptions",
    "FeatureConfig",
    "FeatureReport",
    "KaldiOptions",
    "SdcOptions",
    "VadOptions",
    "cli_features",
    "cli_features_args",
    "compute_features",
    "energy_vad",
    "extract",
    "extract_with_energy",
    "postprocess",
    "read_conf",
    "run_job",
    "utterance_seed",
]
