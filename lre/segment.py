"""Where each language is spoken: language turns as RTTM (``lre segment``).

    lre segment --model exp/hgru talk.wav               # audio files (as lre identify)
    lre segment --scores-dir exp/hgru/test_cs --data data/test_cs   # a scored set (stage 3)
    lre segment --records identify.jsonl                 # lre identify --timeline --json lines

Each input's per-segment posteriors go through the smoothing decoder of
:mod:`lre.segmentation.decoder` (``--switch-penalty``, ``--mono-penalty``,
``--min-turn``, ``--min-gap``, ``--refine``). Speech regions come from the VAD: of the
audio (files), of the data dir's ``vad.scp`` (a scored set), or, for bare records, the span
of their segments. The answer: a table per input on the terminal, ``--rttm FILE`` (``-``:
standard output) and ``--json`` (the result records with their ``turns``, one per line). A
scored set also gets ``<scores-dir>/turns.rttm`` and ``turns.jsonl``. ``--sweep`` decodes
a scored set whose data dir holds a reference RTTM under a grid of settings and prints the
figures of each (choose the defaults on a dev set, never a test set); ``--save
exp/hgru/segment.json`` keeps the choice with the model (the lowest error rate of the
settings that keep 95% of the single-language recordings in one language, where any
does), whose turns then use it (``--decoder FILE`` names another file; each setting given
on the command line still wins).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lre.inference.records import ResultRecord, Turn, read_records, write_records
from lre.segmentation.decoder import (
    DECODER,
    REFINEMENTS,
    DecoderOptions,
    decode_turns,
    language_path,
    load_decoder_options,
    model_decoder_options,
    record_timeline,
    record_turns,
    save_decoder_options,
    speech_regions,
)
from lre.segmentation.rttm import read_rttm, rttm_id, write_rttm
from lre.segmentation.scoring import segmentation_metrics
from lre.utils import LreError, error_cause

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The grid of ``--sweep``.
SWEEP = {"switch_penalty": (0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0),
         "min_turn": (1.0, 2.0, 3.0),
         "mono_penalty": (0.0, 4.0, 8.0, 16.0),
         "min_gap": (0.5, 1.0), "refine": REFINEMENTS}
#: The sweep's choice keeps at least this share of the single-language recordings in one
#: language where a setting of the grid does (then the lowest identification error rate).
SINGLE_KEPT = 0.95
#: The settings that move the Viterbi path (the others only place its turns in time).
_PATH_KEYS = ("switch_penalty", "min_turn", "mono_penalty")


# ----------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------


def reference_rttm(data_dir: PathLike) -> Path | None:
    """The data dir's reference RTTM: ``ref.rttm``, else its only ``*.rttm``, else None."""
    data_dir = Path(data_dir)
    if (data_dir / "ref.rttm").is_file():
        return data_dir / "ref.rttm"
    found = sorted(data_dir.glob("*.rttm"))
    if len(found) > 1:
        logger.warning("%s: %d RTTM files and no ref.rttm; none used as the reference",
                       data_dir, len(found))
    return found[0] if len(found) == 1 else None


def data_dir_speech(data_dir: PathLike) -> dict[str, np.ndarray] | None:
    """Speech regions of every utterance of a data dir with ``vad.scp`` (stage 1), in
    seconds; None without ``vad.scp``."""
    import kaldiio

    from lre.data.tables import read_table
    from lre.features.config import FeatureConfig
    from lre.features.pipeline import voiced
    from lre.features.reader import FEATS_CONFIG, load_feats_config

    data_dir = Path(data_dir)
    if not (data_dir / "vad.scp").is_file():
        return None
    cfg_path = data_dir / FEATS_CONFIG
    cfg = load_feats_config(cfg_path) if cfg_path.is_file() else FeatureConfig()
    out = {}
    for utt, spec in read_table(data_dir / "vad.scp").items():
        try:
            vad = voiced(kaldiio.load_mat(spec))
        except Exception as e:  # a damaged ark: that utterance has no speech regions
            logger.warning("%s: cannot read its VAD from %s (%s); its segments are taken as "
                           "speech", utt, data_dir / "vad.scp", error_cause(e))
            continue
        out[utt] = speech_regions(vad, cfg.frame_shift, cfg.frame_length)
    return out


def turns_of_records(records: Iterable[ResultRecord],
                     speech: Mapping[str, np.ndarray] | None = None,
                     options: DecoderOptions | None = None) -> dict[str, list[Turn]]:
    """``{record id: turns}``; each record gets its turns (``record.turns``) too."""
    out = {}
    for r in records:
        r.turns = record_turns(r, None if speech is None else speech.get(r.id), options)
        out[r.id] = r.turns
    return out


def scored_set(scores_dir: PathLike, data_dir: PathLike | None
               ) -> tuple[list[ResultRecord], dict[str, np.ndarray] | None]:
    """The records of ``<scores_dir>/attention.jsonl`` and the data dir's speech regions."""
    records = list(read_records(Path(scores_dir) / "attention.jsonl", skip_invalid=True))
    if not records:
        raise LreError(f"{Path(scores_dir) / 'attention.jsonl'}: no records")
    if records[0].timeline is None:
        raise LreError(f"{Path(scores_dir) / 'attention.jsonl'}: its segments have no "
                       "posteriors (scored by an older lre score; score the set again)")
    return records, None if data_dir is None else data_dir_speech(data_dir)


# ----------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------


def turns_table(turns: Sequence[Turn]) -> str:
    """The turns as a text table: start, end, language, confidence."""
    rows = [f"{'start':>8} {'end':>8}  {'language':<8} {'conf':>5}"]
    rows += [f"{t.start:8.2f} {t.end:8.2f}  {t.language:<8} {t.confidence:5.2f}" for t in turns]
    return "\n".join(rows)


def print_turns(name: str, record: ResultRecord, out) -> None:
    turns = record.turns or []
    langs = ", ".join(dict.fromkeys(t.language for t in turns)) or "none"
    duration = f"  {record.duration:.2f} s" if record.duration else ""
    print(f"{name}{duration}  {len(turns)} turns: {langs}", file=out)
    print("\n".join("  " + row for row in turns_table(turns).splitlines()), file=out)


def sweep(records: Sequence[ResultRecord], speech: Mapping[str, np.ndarray] | None,
          reference: Mapping[str, Sequence[Turn]], grid: Mapping[str, Sequence[Any]] = SWEEP,
          collar: float = 0.25, nj: int = 1) -> list[dict[str, Any]]:
    """The segmentation figures of every setting of ``grid``, the choice first: settings
    that keep :data:`SINGLE_KEPT` of the single-language recordings in one language before
    the others, then by identification error rate. ``nj`` worker processes share the
    settings (the rows do not depend on ``nj``)."""
    names = sorted(r.id for r in records if r.id in reference)
    if not names:
        raise LreError("sweep: no scored recording is in the reference RTTM")
    if nj < 1:
        raise LreError(f"--nj must be at least 1, got {nj}")
    timelines = {r.id: record_timeline(r) for r in records}
    keys = list(grid)
    settings = [dict(zip(keys, values, strict=True))
                for values in itertools.product(*(grid[k] for k in keys))]
    chunks = _path_chunks(settings, nj)
    shared = (timelines, speech, reference, names, collar)
    if len(chunks) == 1:
        numbered = _sweep_rows(chunks[0], *shared)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(chunks),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = pool.map(_sweep_rows, chunks, *(itertools.repeat(x) for x in shared))
            numbered = [row for part in parts for row in part]
    rows = [row for _, row in sorted(numbered, key=lambda item: item[0])]
    return sorted(rows, key=lambda r: (not r["single_one_language"] >= SINGLE_KEPT,
                                       np.nan_to_num(r["IER"], nan=np.inf),
                                       r["switch_penalty"], r.get("mono_penalty", 0.0),
                                       r["min_turn"]))


def _path_key(opts: DecoderOptions) -> tuple:
    return tuple(getattr(opts, k) for k in _PATH_KEYS)


def _path_chunks(settings: Sequence[dict[str, Any]], nj: int
                 ) -> list[list[tuple[int, dict[str, Any]]]]:
    """``settings`` numbered and cut into at most ``nj`` chunks of about equal size, the
    settings of one Viterbi path in one chunk (each path is decoded once)."""
    groups: dict[tuple, list[tuple[int, dict[str, Any]]]] = {}
    for i, setting in enumerate(settings):
        groups.setdefault(_path_key(DecoderOptions(**setting)), []).append((i, setting))
    size = -(-len(settings) // max(1, min(nj, len(groups))))
    chunks: list[list[tuple[int, dict[str, Any]]]] = [[]]
    for group in groups.values():
        if len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].extend(group)
    return chunks


def _sweep_rows(settings: Sequence[tuple[int, dict[str, Any]]],
                timelines: Mapping[str, Any], speech: Mapping[str, np.ndarray] | None,
                reference: Mapping[str, Sequence[Turn]], names: Sequence[str], collar: float
                ) -> list[tuple[int, dict[str, Any]]]:
    """The figures of each numbered setting: ``[(number, row)]``."""
    paths: dict[tuple, np.ndarray] = {}
    rows = []
    for i, setting in settings:
        opts = DecoderOptions(**setting)
        key = _path_key(opts)
        hyp = {}
        for rid, timeline in timelines.items():
            if timeline is None:
                hyp[rid] = []
                continue
            if (rid, key) not in paths:
                paths[rid, key] = language_path(timeline[0], timeline[2], opts)
            hyp[rid] = decode_turns(*timeline, None if speech is None else speech.get(rid),
                                    opts, paths[rid, key])
        m = segmentation_metrics(reference, hyp, names, collar)
        rows.append((i, {**setting, "IER": m["IER"], "IER_no_collar": m["IER_no_collar"],
                         "boundary_median": m["boundary"]["median"],
                         "boundary_p90": m["boundary"]["p90"],
                         "single_one_language": m["single_language"]["one_language"]}))
    return rows


def save_sweep_choice(path: PathLike, rows: Sequence[Mapping[str, Any]], scores_dir: PathLike,
                      data_dir: PathLike, collar: float) -> DecoderOptions:
    """Save the setting of the sweep's first row (its choice) with its figures."""
    best = rows[0]
    options = DecoderOptions(**{k: best[k] for k in SWEEP})
    save_decoder_options(path, options, {
        "scores": os.fspath(scores_dir), "data": os.fspath(data_dir), "collar": collar,
        "rule": f"lowest identification error rate of the settings that keep at least "
                f"{SINGLE_KEPT:.0%} of the single-language recordings in one language (of "
                "all settings when none does; ties: the lower switch penalty, mono "
                "penalty, then the shorter min turn)",
        "figures": {k: best[k] for k in best if k not in SWEEP}, "settings_tried": len(rows)})
    logger.info("decoder settings %s (IER %.2f%% on %s): wrote %s", options,
                100 * best["IER"], scores_dir, path)
    return options


def sweep_table(rows: Sequence[Mapping[str, Any]], limit: int = 15) -> str:
    """Markdown table of the first ``limit`` rows of :func:`sweep`."""
    head = ("| switch penalty | mono penalty | min turn (s) | min gap (s) | refine | IER (%) "
            "| IER no collar (%) | boundary median / p90 (s) | single-language kept (%) |")
    lines = [head, "|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows[:limit]:
        lines.append(f"| {r['switch_penalty']:g} | {r.get('mono_penalty', 0.0):g} "
                     f"| {r['min_turn']:g} | {r['min_gap']:g} "
                     f"| {r['refine']} | {100 * r['IER']:.2f} | {100 * r['IER_no_collar']:.2f} "
                     f"| {r['boundary_median']:.2f} / {r['boundary_p90']:.2f} "
                     f"| {100 * r['single_one_language']:.1f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


def add_decoder_arguments(parser: argparse.ArgumentParser, *,
                          from_model_dir: bool = True) -> None:
    """The decoder's options (``lre segment``, ``lre evaluate``, ``lre identify``): a
    settings file (with ``from_model_dir``, by default a model dir's ``segment.json``,
    where there is one), each setting given here overriding it."""
    d = DecoderOptions()
    default = (f"the model dir's {DECODER} when there is one, else the built-in defaults "
               "below" if from_model_dir else
               f"the built-in defaults below; run.sh gives the model dir's {DECODER}")
    parser.add_argument("--decoder", default=None, metavar="JSON",
                        help=f"decoder settings chosen by lre segment --sweep --save "
                             f"(default: {default})")
    parser.add_argument("--switch-penalty", type=float, default=None,
                        help=f"cost of a change of language, nats (default {d.switch_penalty})")
    parser.add_argument("--mono-penalty", type=float, default=None,
                        help="extra cost, once, of a recording that changes language at all, "
                             f"nats (default {d.mono_penalty})")
    parser.add_argument("--min-turn", type=float, default=None,
                        help=f"shortest turn in seconds (default {d.min_turn})")
    parser.add_argument("--min-gap", type=float, default=None,
                        help=f"non-speech at least this long (s) ends a turn (default "
                             f"{d.min_gap})")
    parser.add_argument("--refine", choices=REFINEMENTS, default=None,
                        help="switch times: halfway between segments (none) or where the "
                             f"posteriors cross (interpolate; default {d.refine})")


def decoder_options(args: argparse.Namespace,
                    model_dir: PathLike | None = None) -> DecoderOptions:
    """``--decoder`` (else ``model_dir``'s saved settings, else the defaults) with the
    settings given on the command line in place of its own."""
    if getattr(args, "decoder", None):
        base = load_decoder_options(args.decoder)
    elif model_dir is not None:
        base = model_decoder_options(model_dir)
    else:
        base = DecoderOptions()
    given = {k: getattr(args, k) for k in ("switch_penalty", "mono_penalty", "min_turn",
                                           "min_gap", "refine")
             if getattr(args, k, None) is not None}
    opts = replace(base, **given)
    opts.check()
    return opts


def cli_segment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*",
                        help="audio files, dirs or lists (as lre identify; needs --model)")
    parser.add_argument("--model", help="experiment dir for audio inputs, e.g. exp/hgru")
    parser.add_argument("--scores-dir", help="a scored set (attention.jsonl of lre score)")
    parser.add_argument("--data", help="with --scores-dir: its data dir (vad.scp for the "
                                       "speech regions, the reference RTTM for --sweep)")
    parser.add_argument("--records", help="JSON lines of lre identify --timeline --json")
    add_decoder_arguments(parser)
    parser.add_argument("--rttm", help="write the turns as RTTM here ('-': standard output)")
    parser.add_argument("--json", action="store_true",
                        help="print the result records with their turns, one per line")
    parser.add_argument("--sweep", action="store_true",
                        help="with --scores-dir and --data: figures of a grid of settings")
    parser.add_argument("--collar", type=float, default=0.25,
                        help="with --sweep: seconds either side of a reference boundary "
                             "not scored (default %(default)s)")
    parser.add_argument("--nj", type=int, default=1,
                        help="with --sweep: worker processes (default %(default)s)")
    parser.add_argument("--save", default=None, metavar="JSON",
                        help=f"with --sweep: save the setting of the lowest IER here (e.g. "
                             f"exp/hgru/{DECODER}, which the model's turns then use)")
    parser.add_argument("--checkpoint", default="final.pt", help="checkpoint in the model dir")
    parser.add_argument("--device", default="cpu", help="torch device")


def _audio_records(args: argparse.Namespace, opts: DecoderOptions, err
                   ) -> tuple[list[ResultRecord], int]:
    from lre.identify import Identifier, expand_inputs

    if not args.model:
        raise LreError("audio inputs need --model (an experiment dir)")
    ident = Identifier.from_pretrained(args.model, checkpoint=args.checkpoint,
                                       device=args.device)
    sources, errors = expand_inputs(args.inputs)
    for e in errors:
        print(f"lre segment: {e}", file=err)
    records = []
    for src in sources:
        try:
            r = ident.segment(src.spec, options=opts)
        except LreError as e:
            print(f"lre segment: {e}", file=err)
            errors.append(str(e))
            continue
        r.id, r.source = src.name, src.spec
        records.append(r)
    return records, len(errors)


def cli_segment(args: argparse.Namespace, out=None, err=None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    opts = decoder_options(args, args.model if args.inputs else None)
    given = [bool(args.inputs), bool(args.scores_dir), bool(args.records)]
    if args.save and not args.sweep:
        raise LreError("--save goes with --sweep (it saves the sweep's best setting)")
    if sum(given) != 1:
        raise LreError("give audio inputs (with --model), --scores-dir, or --records")
    failed = 0
    if args.scores_dir:
        records, speech = scored_set(args.scores_dir, args.data)
        if args.sweep:
            ref_path = reference_rttm(args.data) if args.data else None
            if ref_path is None:
                raise LreError("--sweep needs --data with a reference RTTM (ref.rttm)")
            rows = sweep(records, speech, read_rttm(ref_path), collar=args.collar,
                         nj=args.nj)
            print(sweep_table(rows), end="", file=out)
            if args.save:
                save_sweep_choice(args.save, rows, args.scores_dir, args.data, args.collar)
                print(f"saved the first row's settings: {args.save}", file=out)
            return 0
        turns_of_records(records, speech, opts)
        write_rttm(Path(args.scores_dir) / "turns.rttm", {r.id: r.turns or [] for r in records})
        write_records(Path(args.scores_dir) / "turns.jsonl", records)
    elif args.records:
        records = list(read_records(args.records))
        turns_of_records(records, None, opts)
    else:
        records, failed = _audio_records(args, opts, err)
    if args.rttm:
        write_rttm(args.rttm, {rttm_id(r.id): r.turns or [] for r in records}, out=out)
    if args.json:
        import json

        for r in records:
            print(json.dumps(r.to_dict(), ensure_ascii=False), file=out)
    elif args.rttm != "-":
        for r in records:
            print_turns(r.id, r, out)
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------
# stage 4: a scored set with a reference RTTM
# ----------------------------------------------------------------------------------------


def evaluate_segmentation(scores_dir: PathLike, data_dir: PathLike, files: Sequence[str],
                          options: DecoderOptions | None = None, collar: float = 0.25,
                          plots: int = 2) -> dict[str, Any] | None:
    """Turns of a scored set against its data dir's reference RTTM (``lre evaluate``).

    Writes ``<scores_dir>/turns.rttm`` and up to ``plots`` ``segments_<reco>.png`` (the
    switching recordings with the most and the fewest errors). Returns the figures of
    :func:`lre.segmentation.scoring.segmentation_metrics` over ``files`` (the evaluated
    utterances that the reference names), or None when the data dir has no reference RTTM
    or the scores no timeline (said in a warning).
    """
    from dataclasses import asdict

    from lre.segmentation.scoring import error_components

    scores_dir = Path(scores_dir)
    ref_path = reference_rttm(data_dir)
    if ref_path is None:
        return None
    opts = options or DecoderOptions()
    try:
        records, speech = scored_set(scores_dir, data_dir)
    except LreError as e:
        logger.warning("no language segmentation: %s", e)
        return None
    reference = read_rttm(ref_path)
    hyp = turns_of_records(records, speech, opts)
    write_rttm(scores_dir / "turns.rttm", {r: hyp[r] for r in sorted(hyp)})
    names = [f for f in files if f in reference]
    if not names:
        logger.warning("%s: names none of the evaluated recordings; no segmentation figures",
                       ref_path)
        return None
    results = {"reference": str(ref_path), "hypothesis": "turns.rttm",
               "decoder": asdict(opts), **segmentation_metrics(reference, hyp, names, collar)}
    errors = {}
    for name in names:
        if len({t.language for t in reference[name]}) > 1 and name in hyp:
            c = error_components(reference[name], hyp[name], collar)
            errors[name] = (c["missed"] + c["false_alarm"] + c["confusion"]) / max(
                c["reference"], 1e-9)
    ranked = sorted(errors, key=lambda n: (-errors[n], n))
    chosen = list(dict.fromkeys([*ranked[:1], *ranked[-1:]]))[:max(plots, 0)]
    by_id = {r.id: r for r in records}
    results["plots"] = []
    for name, why in zip(chosen, ("most errors", "fewest errors"), strict=False):
        from lre import plots as plotting

        file = f"segments_{rttm_id(name).replace('/', '_')}.png"
        try:
            plotting.plot_segments(by_id[name], scores_dir / file, reference=reference[name],
                                   speech=None if speech is None else speech.get(name))
        except (LreError, ValueError) as e:
            logger.warning("%s: segments plot not written: %s", name, e)
            continue
        results["plots"].append({"recording": name, "file": file, "why": why,
                                 "IER": errors[name]})
    return results


def segmentation_report(seg: Mapping[str, Any]) -> list[str]:
    """The lines of report.md about the language turns of a set."""
    def pct(x: Any) -> str:
        return "-" if x is None or x != x else f"{100 * x:.2f}"

    def sec(x: Any) -> str:
        return "-" if x is None or x != x else f"{x:.2f}"

    b, s, d = seg["boundary"], seg["single_language"], seg["decoder"]
    lines = ["## Language segmentation", "",
             f"Turns decoded from the per-segment posteriors (switch penalty "
             f"{d['switch_penalty']:g} nats, mono penalty {d.get('mono_penalty', 0.0):g} "
             f"nats, min turn {d['min_turn']:g} s, min gap "
             f"{d['min_gap']:g} s, refine {d['refine']}), written to `{seg['hypothesis']}`, "
             f"against `{seg['reference']}`: {seg['recordings']} recordings, "
             f"{seg['reference_seconds']:.1f} s of reference speech. Identification error "
             f"rate (no label mapping) with a collar of {seg['collar']:g} s either side of "
             "each reference boundary, and without.", "",
             "| figure | value |", "|---|---:|",
             f"| IER (%) | {pct(seg['IER'])} |",
             f"| missed speech (%) | {pct(seg['missed'])} |",
             f"| false alarm (%) | {pct(seg['false_alarm'])} |",
             f"| confusion (%) | {pct(seg['confusion'])} |",
             f"| IER without collar (%) | {pct(seg['IER_no_collar'])} |",
             f"| reference switches | {b['reference_switches']} |",
             f"| boundary error median (s) | {sec(b['median'])} |",
             f"| boundary error 90th percentile (s) | {sec(b['p90'])} |",
             f"| switches found within 0.5 s (%) | {pct(b['within_0.5s'])} |",
             f"| switches in recordings without a detected switch | "
             f"{b['in_recordings_without_detected_switch']} |",
             f"| single-language recordings | {s['recordings']} |",
             f"| ... segmented as one language (%) | {pct(s['one_language'])} |",
             f"| ... as the right one (%) | {pct(s['one_language_right'])} |", ""]
    for p in seg.get("plots", []):
        lines += [f"### {p['recording']} ({p['why']}, IER {pct(p['IER'])}%)", "",
                  "Per-segment posteriors; below them the reference and the decoded turns.", "",
                  f"![segments of {p['recording']}]({p['file']})", ""]
    return lines
