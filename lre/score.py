"""Stage 3: score a data dir with a trained model.

``lre score --model-dir exp/hgru --data data/test --out exp/hgru/test`` reads the raw
features of stage 1 (``feats.scp``, ``vad.scp``) through :mod:`lre.features.reader` with the
model's feature config, runs them through :func:`lre.inference.runner.run_utterances` (the
same core ``lre identify`` uses) and writes into ``--out``:

- ``scores_raw.tsv``: log-posteriors of the model, header ``utt<TAB>lang...``;
- ``scores.tsv``: the same, calibrated when ``<model-dir>/calibration.json`` exists;
- ``llr.tsv``: detection log-likelihood ratios from ``scores.tsv`` under flat priors,
  ``llr(l) = log p(x|l) - log( 1/(N-1) sum_{j!=l} p(x|j) )``;
- ``attention.jsonl``: one result record per utterance (:mod:`lre.inference.records`),
  segment times in seconds of the utterance's original audio, each segment with its own
  language posteriors (the timeline that ``lre segment`` and stage 4 turn into turns);
- ``openset.tsv`` and ``openset.json``: each utterance's open-set score and whether it was
  answered "unknown", and the operating point that decided it (only when the model dir has
  one, ``openset.json``, or ``--unknown-threshold`` is given; :mod:`lre.openset`);
- ``score_failed``: utterances that could not be scored, with the reason (only when any).

With ``--langs en,de,fr`` the tables and records hold only those languages, their
posteriors renormalised over them after calibration (:mod:`lre.languages`); stage 4 then
counts utterances of the other languages as out-of-set.

Utterances longer than ``max_chunk_seconds`` of voiced speech are cut into equal chunks
that go through the model separately and are recombined, as in ``lre identify``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lre.data.tables import c_sorted, read_table, write_text
from lre.features.reader import FEATS_CONFIG, FeatureReader, load_feats_config
from lre.inference.chunks import UtteranceResult, max_chunk_frames
from lre.inference.model_dir import (
    Calibrator,
    TrainedModel,
    check_feats_compatible,
    load_model_dir,
)
from lre.inference.records import UNKNOWN, ResultRecord, write_records
from lre.inference.runner import ModelInput, run_utterances
from lre.languages import add_answer_options, check_subset, parse_langs
from lre.utils import LreError, path_list

if TYPE_CHECKING:
    from lre.fusion import FusedModel
    from lre.openset import OpenSet

logger = logging.getLogger(__name__)


def write_results(
    out_dir: str | os.PathLike,
    langs: list[str],
    results: dict[str, UtteranceResult],
    calibrator: Calibrator,
    subset: list[str] | None = None,
    openset: OpenSet | None = None,
) -> dict[str, Path]:
    """Write ``scores_raw.tsv``, ``scores.tsv``, ``llr.tsv`` and ``attention.jsonl``; with
    ``subset`` (:func:`lre.languages.check_subset`), only those languages' columns,
    renormalised over them after calibration. With ``openset``, records it rejects are
    answered "unknown", and ``openset.tsv``/``openset.json`` say why
    (:func:`lre.openset.write_openset_scores`); the open-set decision is over all the
    model's languages, before the subset."""
    from lre.languages import subset_log_posteriors, subset_result
    from lre.metrics import llr_from_logpost, write_scores
    from lre.openset import OpenSetInputs, write_openset_scores

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utts = c_sorted(results)
    raw = np.stack([results[u].log_posteriors for u in utts])
    cal = calibrator(raw)
    open_scores = None if openset is None else openset.scores(
        OpenSetInputs.from_results([results[u] for u in utts], cal))
    unknown = (np.zeros(len(utts), dtype=bool) if open_scores is None
               else openset.unknown(open_scores))
    write_openset_scores(out_dir, utts, openset, open_scores)
    if subset is not None:
        raw, cal = (subset_log_posteriors(v, langs, subset) for v in (raw, cal))
        results = {u: subset_result(results[u], langs, subset) for u in utts}
        langs = subset
    paths = {
        "scores_raw": out_dir / "scores_raw.tsv",
        "scores": out_dir / "scores.tsv",
        "llr": out_dir / "llr.tsv",
        "attention": out_dir / "attention.jsonl",
    }
    write_scores(paths["scores_raw"], utts, langs, raw)
    write_scores(paths["scores"], utts, langs, cal)
    write_scores(paths["llr"], utts, langs, llr_from_logpost(cal))
    write_records(paths["attention"], (
        ResultRecord.from_result(u, langs, cal[i], results[u], calibrated=calibrator.active,
                                 decision=UNKNOWN if unknown[i] else None)
        for i, u in enumerate(utts)))
    return paths


@dataclass
class ScoreReport:
    """What :func:`score_datadir` did."""

    out_dir: Path
    scored: int
    failed: dict[str, str]
    calibrated: bool
    paths: dict[str, Path]


def _reader_for(model: TrainedModel, data_dir: Path) -> FeatureReader:
    """The data dir's features, read with the model's feature config."""
    cfg = model.feats_config
    if (data_dir / FEATS_CONFIG).is_file():
        check_feats_compatible(cfg, load_feats_config(data_dir / FEATS_CONFIG), str(data_dir))
    else:
        logger.warning("%s: no %s; assuming the model's feature config", data_dir, FEATS_CONFIG)
    reader = FeatureReader(data_dir, feature_config=cfg)
    if reader.vad_scp is None:
        logger.warning("%s: no vad.scp; scoring all frames", data_dir)
    return reader


def _longest_first(data_dir: Path, utts: list[str]) -> list[str]:
    """Longest first (``utt2num_frames``), so that neighbours share a batch and a memory
    problem shows at once rather than at the end."""
    lengths: dict[str, int] = {}
    u2nf = data_dir / "utt2num_frames"
    if u2nf.is_file():
        for u, v in read_table(u2nf).items():
            try:
                lengths[u] = int(v.split()[0])
            except (ValueError, IndexError):
                pass
    return sorted(utts, key=lambda u: (-lengths.get(u, 0), u))


def model_inputs(reader: FeatureReader, utts: list[str], feat_dim: int,
                 failed: dict[str, str]) -> Iterator[ModelInput]:
    """Each utterance's model input; one that cannot be read is logged, put in ``failed``
    (``utt -> reason``) and skipped."""
    from tqdm import tqdm

    for utt in tqdm(utts, desc="score", unit="utt", disable=None):
        try:
            x, index = reader.read(utt)
            if x.shape[1] != feat_dim:
                raise LreError(f"{utt}: features have dim {x.shape[1]}, model expects {feat_dim}")
            if len(x) == 0:
                raise LreError(f"{utt}: no voiced frame after VAD")
        except LreError as e:
            failed[utt] = str(e).removeprefix(f"{utt}: ")
            logger.warning("skipped %s", e)
            continue
        yield ModelInput(utt, x, index)


def _write_failed(out_dir: Path, failed: dict[str, str], total: int) -> None:
    path = out_dir / "score_failed"
    if failed:
        write_text(path, "".join(f"{u} {failed[u]}\n" for u in c_sorted(failed)))
        logger.warning("%d of %d utterances could not be scored; see %s", len(failed), total,
                       path)
    elif path.exists():
        path.unlink()


def run_datadir(
    model: TrainedModel | FusedModel,
    data_dir: str | os.PathLike | Sequence[str | os.PathLike],
    batch_size: int = 32,
    max_batch_frames: int = 60000,
    max_chunk_seconds: float = 60.0,
    timeline: bool = False,
) -> tuple[dict[str, UtteranceResult], dict[str, str], int]:
    """The model's result for every utterance of ``data_dir`` whose features can be read
    -> ``(results, failed (utt -> reason), number of utterances)``. A fusion runs each
    subsystem on the data dir (or on its own of a list, one per subsystem) and fuses."""
    from lre.fusion import FusedModel, run_fused_datadir

    if isinstance(model, FusedModel):
        return run_fused_datadir(model, data_dir, batch_size=batch_size,
                                 max_batch_frames=max_batch_frames,
                                 max_chunk_seconds=max_chunk_seconds, timeline=timeline)
    data_dir = _single_data_dir(data_dir)
    cfg = model.feats_config
    reader = _reader_for(model, data_dir)
    utts = _longest_first(data_dir, list(reader.feats_scp))
    failed: dict[str, str] = {}
    try:
        results = dict(run_utterances(
            model.runner, model_inputs(reader, utts, cfg.feat_dim, failed),
            cfg.frame_shift, cfg.frame_length,
            max_chunk_frames(max_chunk_seconds, cfg.frame_shift),
            batch_size=batch_size, max_batch_frames=max_batch_frames, timeline=timeline))
    finally:
        reader.close()
    return results, failed, len(utts)


def _single_data_dir(data_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> Path:
    dirs = path_list(data_dir)
    if len(dirs) != 1:
        raise LreError(f"--data: a model reads one data dir, got {len(dirs)} (several "
                       "are for a fusion of models of different front ends)")
    return dirs[0]


def score_datadir(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    checkpoint: str = "final.pt",
    batch_size: int = 32,
    max_batch_frames: int = 60000,
    max_chunk_seconds: float = 60.0,
    device: str = "cpu",
    langs: list[str] | str | None = None,
    unknown_threshold: float | None = None,
) -> ScoreReport:
    """Score every utterance of ``data_dir`` with the model in ``model_dir``.

    Args:
        model_dir: experiment dir (``<checkpoint>``, ``feats_config.json``, optional
            ``calibration.json``).
        data_dir: data dir with ``feats.scp`` (and ``vad.scp``; without it every frame
            is used) from the feature stage. ``model_dir`` may be a fusion dir
            (:mod:`lre.fusion`): then every subsystem scores it (or each its own data
            dir of a list, one per subsystem) and the scores are fused.
        out_dir: where the score files go.
        batch_size: most inputs per model call.
        max_batch_frames: most padded frames (batch x longest) per model call.
        max_chunk_seconds: voiced speech per model input; longer utterances are split
            into equal chunks and recombined.
        langs: only these of the model's languages (``"en,de"`` or a list): every table
            and record holds their posteriors renormalised over them.
        unknown_threshold: answer "unknown" when the top posterior is below this, instead
            of the model dir's open-set operating point (``openset.json``, when there is
            one; :mod:`lre.openset`).

    Utterances whose features cannot be read, or that have no voiced frame, are
    skipped, logged and listed in ``<out_dir>/score_failed``; the stage fails only when
    nothing could be scored.
    """
    from lre.openset import load_openset

    out_dir = Path(out_dir)
    model = load_model_dir(model_dir, checkpoint, device=device)
    subset = None if langs is None else check_subset(parse_langs(langs) or [], model.langs)
    openset = load_openset(model_dir, unknown_threshold)
    # per-segment posteriors in attention.jsonl: stage 4's language turns
    results, failed, total = run_datadir(model, data_dir, batch_size, max_batch_frames,
                                         max_chunk_seconds, timeline=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_failed(out_dir, failed, total)
    if not results:
        raise LreError(f"{' '.join(map(str, path_list(data_dir)))}: no utterance could be "
                       "scored")
    paths = write_results(out_dir, model.langs, results, model.calibrator, subset, openset)
    logger.info("scored %d utterances into %s%s%s", len(results), out_dir,
                " (calibrated)" if model.calibrator.active else "",
                f"; {len(failed)} failed, listed in score_failed" if failed else "")
    return ScoreReport(out_dir, len(results), failed, model.calibrator.active, paths)


def cli_score_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="experiment dir, e.g. exp/hgru")
    parser.add_argument("--data", required=True, nargs="+", metavar="DIR",
                        help="data dir with feats.scp (and vad.scp); for a fusion dir whose "
                             "models have different front ends, one per model")
    parser.add_argument("--out", required=True, help="output dir, e.g. exp/hgru/test")
    parser.add_argument("--checkpoint", default="final.pt",
                        help="checkpoint file in the model dir (default: final.pt)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per model call")
    parser.add_argument("--max-batch-frames", type=int, default=60000,
                        help="most padded frames per model call (bounds memory)")
    parser.add_argument("--max-chunk-seconds", type=float, default=60.0,
                        help="longer utterances are scored in chunks of this much speech")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    add_answer_options(parser)


def cli_score(args: argparse.Namespace) -> int:
    score_datadir(  # logs what it wrote
        args.model_dir,
        args.data,
        args.out,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        max_batch_frames=args.max_batch_frames,
        max_chunk_seconds=args.max_chunk_seconds,
        device=args.device,
        langs=args.langs,
        unknown_threshold=args.unknown_threshold,
    )
    return 0
