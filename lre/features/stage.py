"""Stage 1, ``lre features`` / ``features/make_feats.sh``: features of a data dir.

:func:`compute_features` splits a data dir into ``--nj`` parts, runs one job per part through
``--cmd`` (see :mod:`lre.parallel`), and merges the per-job ark/scp files into ``feats.scp``,
``vad.scp``, ``utt2num_frames``, ``feats_config.json`` and ``feats_failed``. Every job
commits its outputs atomically; a re-run redoes only the jobs that did not finish. A job
stores what :func:`lre.features.pipeline.extract` gives: raw features and the VAD decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kaldiio
import numpy as np

from lre.data.tables import c_sorted, read_table, write_table
from lre.features.cmvn import KALDI_CMVN_DEFAULTS
from lre.features.config import FeatureConfig, apply_conf, read_conf
from lre.features.pipeline import encoder_vad, extract, num_frames, utterance_seed
from lre.features.vad import KALDI_VAD_DEFAULTS
from lre.utils import LreError, atomic_write_text, limit_threads

if TYPE_CHECKING:
    from lre.data.datadir import DataDir
    from lre.parallel import Job

logger = logging.getLogger("lre.features.stage")

#: Files the stage writes into the data dir.
STAGE_OUTPUTS = ("feats.scp", "vad.scp", "utt2num_frames", "feats_failed", "feats_config.json")


@dataclass
class JobPaths:
    """Files of job ``index`` of data set ``name`` in ``feat_dir`` (Kaldi-like names)."""

    feat_dir: Path
    kind: str
    name: str
    index: int

    def _p(self, stem: str, ext: str) -> Path:
        return self.feat_dir / f"{stem}_{self.name}.{self.index}.{ext}"

    @property
    def feats_ark(self) -> Path:
        return self._p(f"raw_{self.kind}", "ark")

    @property
    def feats_scp(self) -> Path:
        return self._p(f"raw_{self.kind}", "scp")

    @property
    def vad_ark(self) -> Path:
        return self._p("vad", "ark")

    @property
    def vad_scp(self) -> Path:
        return self._p("vad", "scp")

    @property
    def manifest(self) -> Path:
        """The job is complete iff this matches and the four ark/scp files exist."""
        return self._p(f"raw_{self.kind}", "done.json")

    def all(self) -> list[Path]:
        return [self.feats_ark, self.feats_scp, self.vad_ark, self.vad_scp, self.manifest]

    def remove_temporaries(self) -> None:
        for final in self.all():
            for tmp in self.feat_dir.glob(f".{final.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
            Path(f"{final}.tmp").unlink(missing_ok=True)


def _utts_digest(utts: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(utts).encode("utf-8")).hexdigest()[:16]


def _scp_line(utt: str, ark: Path, pos: int) -> str:
    return f"{utt} {ark}:{pos}\n"


@dataclass
class _JobTally:
    """What one job made of its utterances; the scp lines point into the job's arks."""

    feats_lines: list[str] = field(default_factory=list)
    vad_lines: list[str] = field(default_factory=list)
    num_frames: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    audio_seconds: float = 0.0

    def skip(self, utt: str, reason: str) -> None:
        self.failed[utt] = reason
        logger.warning("skipping %s: %s", utt, reason)


def run_job(
    split_dir: str | os.PathLike,
    config: FeatureConfig,
    feat_dir: str | os.PathLike,
    name: str,
    index: int,
) -> dict[str, Any]:
    """Compute features for one part of a split data dir and commit them atomically.

    Writes ``raw_<kind>_<name>.<index>.{ark,scp}``, ``vad_<name>.<index>.{ark,scp}`` and
    the manifest ``raw_<kind>_<name>.<index>.done.json`` (frame counts, failures), each
    by atomic rename; the arks first, then the rest.
    Bad utterances are skipped with a one-line reason in the log. Returns the manifest.
    """
    from lre.data.datadir import DataDir

    limit_threads(1)  # jobs are the unit of parallelism, as in Kaldi
    start_wall, start_cpu = time.time(), time.process_time()
    feat_dir = Path(feat_dir).absolute()
    feat_dir.mkdir(parents=True, exist_ok=True)
    paths = JobPaths(feat_dir, config.kind, name, index)
    paths.remove_temporaries()
    dd = DataDir.load(split_dir)
    utts = dd.utts
    feats_tmp, vad_tmp = Path(f"{paths.feats_ark}.tmp"), Path(f"{paths.vad_ark}.tmp")
    logger.info("job %d: %d utterances from %s", index, len(utts), split_dir)
    try:
        tally = _write_job_arks(dd, config, paths, feats_tmp, vad_tmp)
        os.replace(feats_tmp, paths.feats_ark)
        os.replace(vad_tmp, paths.vad_ark)
        manifest = {
            "config": config.digest(),
            "utts": _utts_digest(utts),
            "num_utts": len(utts),
            "num_frames": tally.num_frames,
            "failed": tally.failed,
            "audio_seconds": round(tally.audio_seconds, 3),
            "cpu_seconds": round(time.process_time() - start_cpu, 3),
            "wall_seconds": round(time.time() - start_wall, 3),
        }
        _write_job_tables(paths, tally, manifest)
    except BaseException:
        feats_tmp.unlink(missing_ok=True)
        vad_tmp.unlink(missing_ok=True)
        raise
    logger.info(
        "job %d done: %d utterances, %d skipped, %.1f s of audio in %.2f CPU s (%.0fx real time)",
        index, len(tally.num_frames), len(tally.failed), tally.audio_seconds,
        manifest["cpu_seconds"], tally.audio_seconds / max(manifest["cpu_seconds"], 1e-9),
    )
    return manifest


def _write_job_arks(
    dd: DataDir, config: FeatureConfig, paths: JobPaths, feats_tmp: Path, vad_tmp: Path
) -> _JobTally:
    """Features and VAD of each utterance of data dir ``dd`` into two arks, synced to disk.

    The arks are written to ``feats_tmp`` / ``vad_tmp``; their scp lines name the final
    paths of ``paths``, which the caller renames them to.
    """
    from lre.data.audio import AudioError
    from lre.data.datadir import iter_audio

    tally = _JobTally()
    num_utts = len(dd.utts)
    # Kaldi's compressed matrices (kSpeechFeature, 1 byte a value) for large encoder states.
    compression = 2 if config.is_encoder and config.encoder.storage == "compressed" else None
    # States computed when read: the job stores the VAD only (and an empty feature ark).
    on_read = config.states_on_read
    with open(feats_tmp, "wb") as fark, open(vad_tmp, "wb") as vark:
        for n, (utt, wave) in enumerate(
            # Any length is read; shorter than one frame is rejected below, by name.
            iter_audio(dd, sample_rate=config.sample_rate, min_seconds=0.0), 1
        ):
            if isinstance(wave, AudioError):
                # iter_audio has logged the one-line reason already.
                tally.failed[utt] = _reason(utt, str(wave))
                continue
            tally.audio_seconds += len(wave) / config.sample_rate
            if num_frames(config, len(wave)) == 0:
                tally.skip(utt, f"shorter than one frame ({len(wave)} samples)")
                continue
            if on_read:
                feats, vad = None, encoder_vad(wave, config)
            else:
                feats, vad = extract(wave, config, seed=utterance_seed(utt))
            if not vad.any():
                tally.skip(utt, f"no voiced frame after energy VAD ({len(vad)} frames)")
                continue
            head = len(utt.encode("utf-8")) + 1  # kaldiio writes "<utt> " first
            if feats is not None:
                tally.feats_lines.append(_scp_line(utt, paths.feats_ark, fark.tell() + head))
                kaldiio.save_ark(fark, {utt: feats}, compression_method=compression)
            tally.vad_lines.append(_scp_line(utt, paths.vad_ark, vark.tell() + head))
            kaldiio.save_ark(vark, {utt: vad.astype(np.float32)})
            tally.num_frames[utt] = len(vad)
            if n % 500 == 0:
                logger.info("job %d: %d of %d utterances", paths.index, n, num_utts)
        fark.flush()
        vark.flush()
        _concurrently([lambda: os.fsync(fark.fileno()), lambda: os.fsync(vark.fileno())])
    return tally


def _write_job_tables(paths: JobPaths, tally: _JobTally, manifest: dict[str, Any]) -> None:
    """The job's two scp files and its manifest, each by atomic rename.

    They are written side by side: a job counts as done only when its manifest AND all
    four ark/scp files exist (see _read_manifest), so their order does not matter, and
    each is complete or absent.
    """
    _concurrently([
        lambda: atomic_write_text(paths.feats_scp, "".join(tally.feats_lines)),
        lambda: atomic_write_text(paths.vad_scp, "".join(tally.vad_lines)),
        lambda: atomic_write_text(paths.manifest,
                                  json.dumps(manifest, indent=1, sort_keys=True) + "\n"),
    ])


def _reason(utt: str, message: str) -> str:
    """``"<utt>: <cause>"`` -> ``"<cause>"`` (feats_failed holds ``utt cause``)."""
    prefix = f"{utt}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _read_manifest(paths: JobPaths, config: FeatureConfig, utts: Sequence[str]) -> dict | None:
    """The job's manifest when it is complete for this config and these utterances."""
    try:
        manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("config") != config.digest() or manifest.get("utts") != _utts_digest(utts):
        return None
    if not all(p.is_file() for p in (paths.feats_ark, paths.feats_scp, paths.vad_ark,
                                     paths.vad_scp)):
        return None
    return manifest


# ----------------------------------------------------------------------------------------
# The stage: split, run, merge
# ----------------------------------------------------------------------------------------


@dataclass
class FeatureReport:
    """What :func:`compute_features` did."""

    data_dir: Path
    num_utts: int
    num_done: int
    failed: dict[str, str] = field(default_factory=dict)
    jobs_run: list[int] = field(default_factory=list)
    jobs_reused: list[int] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.data_dir}: features for {self.num_done} of {self.num_utts} utterances "
                f"({len(self.failed)} failed; jobs run {len(self.jobs_run)}, reused "
                f"{len(self.jobs_reused)}; {self.audio_seconds:.1f} s of audio in "
                f"{self.wall_seconds:.1f} s)")


@dataclass
class _StagePlan:
    """Where one run of the stage reads and writes, and its split of the data dir."""

    data_dir: Path
    config: FeatureConfig
    name: str  # the data set's name, used in the job file names
    num_utts: int
    feat_dir: Path
    log_dir: Path
    parts: list[Path]  # split{nj}/{1..nj}
    config_json: Path
    config_text: str

    @property
    def nj(self) -> int:
        return len(self.parts)

    def paths(self, index: int) -> JobPaths:
        return JobPaths(self.feat_dir, self.config.kind, self.name, index)


def compute_features(
    data_dir: str | os.PathLike,
    config: FeatureConfig | None = None,
    nj: int = 1,
    cmd: str = "",
    feat_dir: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    max_fail_share: float = 0.1,
    force: bool = False,
) -> FeatureReport:
    """The feature stage for one data dir.

    Splits ``data_dir`` into ``nj`` parts (``split{nj}/{i}``), runs one
    ``python -m lre.features.stage job`` per part through ``cmd`` (local when empty; see
    :func:`lre.parallel.run_jobs`), with logs ``log_dir/make_feats.<i>.log``, and merges
    the results into ``data_dir``: ``feats.scp``, ``vad.scp`` (0/1 float vectors),
    ``utt2num_frames``, ``feats_config.json`` and, when some failed, ``feats_failed``.

    Jobs whose outputs are complete for this config are reused unless ``force``.
    Defaults: ``feat_dir = data_dir/data``, ``log_dir = data_dir/log`` (Kaldi's).

    Raises:
        LreError: a job failed (message names its log and ends with its tail), or more
            than ``max_fail_share`` of the utterances could not be processed (the outputs
            for the others are written first).
    """
    config = FeatureConfig() if config is None else config
    if config.is_encoder:
        from lre.features.encoders import resolve
        config = dataclasses.replace(config, encoder=resolve(config.kind, config.encoder))
    t0 = time.time()
    plan = _plan_stage(Path(data_dir), config, nj, feat_dir, log_dir)
    report = FeatureReport(data_dir=plan.data_dir, num_utts=plan.num_utts, num_done=0)
    manifests, jobs = _reuse_or_plan_jobs(plan, force, report)
    if jobs:
        _run_pending_jobs(plan, jobs, cmd, manifests, report)
    _merge_job_outputs(plan, manifests, report)
    _remove_stale_jobs(plan.feat_dir, config.kind, plan.name, plan.nj)
    report.wall_seconds = time.time() - t0
    logger.info("%s", report.summary())
    _check_failures(plan, report, max_fail_share)
    return report


def _plan_stage(
    data_dir: Path,
    config: FeatureConfig,
    nj: int,
    feat_dir: str | os.PathLike | None,
    log_dir: str | os.PathLike | None,
) -> _StagePlan:
    """Remove the stage's earlier outputs, split ``data_dir`` and write the job config."""
    from lre.data.datadir import DataDir, split

    # Outputs of an earlier run are stale from here on (and a run killed while merging
    # may have left them disagreeing with each other, which DataDir.load rejects).
    for stale in STAGE_OUTPUTS:
        (data_dir / stale).unlink(missing_ok=True)
    utts = DataDir.load(data_dir).utts
    if not utts:
        raise LreError(f"{data_dir}: no utterances")
    name = data_dir.resolve().name
    feat_dir = (data_dir / "data" if feat_dir is None else Path(feat_dir)).absolute()
    log_dir = (data_dir / "log" if log_dir is None else Path(log_dir)).absolute()
    feat_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    parts = split(data_dir, max(1, min(int(nj), len(utts))))
    config_json = feat_dir / f"raw_{config.kind}_{name}.config.json"
    config_text = json.dumps(config.to_dict(), indent=2) + "\n"
    if not config_json.is_file() or config_json.read_text(encoding="utf-8") != config_text:
        atomic_write_text(config_json, config_text)
    return _StagePlan(data_dir=data_dir, config=config, name=name, num_utts=len(utts),
                      feat_dir=feat_dir, log_dir=log_dir, parts=parts,
                      config_json=config_json, config_text=config_text)


def _reuse_or_plan_jobs(
    plan: _StagePlan, force: bool, report: FeatureReport
) -> tuple[dict[int, dict], list[Job]]:
    """Manifests of the jobs already complete (unless ``force``) and the jobs still to run.

    The files of a job that is to run are removed first.
    """
    from lre.data.datadir import DataDir
    from lre.parallel import Job

    manifests: dict[int, dict] = {}
    jobs: list[Job] = []
    for i, part in enumerate(plan.parts, 1):
        paths = plan.paths(i)
        done = None if force else _read_manifest(paths, plan.config, DataDir.load(part).utts)
        if done is not None:
            manifests[i] = done
            report.jobs_reused.append(i)
            continue
        for p in paths.all():
            p.unlink(missing_ok=True)
        jobs.append(Job(
            index=i,
            module="lre.features.stage",
            argv=["job", "--config", str(plan.config_json), "--feat-dir", str(plan.feat_dir),
                  "--name", plan.name, "--index", str(i), str(part.absolute())],
            log=plan.log_dir / f"make_feats.{i}.log",
        ))
    if report.jobs_reused:
        logger.info("%s: %d of %d jobs already done, reusing them", plan.data_dir,
                    len(report.jobs_reused), plan.nj)
    return manifests, jobs


def _run_pending_jobs(
    plan: _StagePlan, jobs: Sequence[Job], cmd: str, manifests: dict[int, dict],
    report: FeatureReport,
) -> None:
    """Run ``jobs`` through ``cmd`` and add their manifests to ``manifests``."""
    from lre.data.datadir import DataDir
    from lre.parallel import run_jobs

    def on_done(result: Any) -> None:
        try:
            m = json.loads(plan.paths(result.index).manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        logger.info("make_feats job %d/%d done in %.1f s: %d utterances, %d skipped, "
                    "%.0f s of audio", result.index, plan.nj, result.seconds,
                    len(m["num_frames"]), len(m["failed"]), m["audio_seconds"])

    if (not cmd.strip() or cmd.strip() == "local") and not plan.config.is_encoder:
        # Local jobs are forked from this process: build the mel banks and run torch's
        # kernels once here, so that no job pays for that set-up again.
        extract(np.random.default_rng(0).standard_normal(
            4 * plan.config.kaldi.window_size).astype(np.float32) * 0.01, plan.config)
    run_jobs(jobs, cmd=cmd, on_done=on_done, what=f"make_feats {plan.name}")
    for job in jobs:
        part_utts = DataDir.load(plan.parts[job.index - 1]).utts
        m = _read_manifest(plan.paths(job.index), plan.config, part_utts)
        if m is None:
            raise LreError(f"{job.log}: job {job.index} exited cleanly but left no "
                           f"complete output in {plan.feat_dir}")
        manifests[job.index] = m
        report.jobs_run.append(job.index)


def _merge_job_outputs(
    plan: _StagePlan, manifests: dict[int, dict], report: FeatureReport
) -> None:
    """Write the data dir's feature tables from every job's outputs (sorted, so a resumed
    run gives byte-identical files); fill ``report``'s counts and failures."""
    feats: dict[str, str] = {}
    vads: dict[str, str] = {}
    frames: dict[str, int] = {}
    for i in range(1, plan.nj + 1):
        paths = plan.paths(i)
        feats.update(read_table(paths.feats_scp))
        vads.update(read_table(paths.vad_scp))
        frames.update(manifests[i]["num_frames"])
        report.failed.update(manifests[i]["failed"])
        report.audio_seconds += float(manifests[i].get("audio_seconds", 0.0))
    on_read = plan.config.states_on_read
    if (set(feats) != (set() if on_read else set(frames))) or set(vads) != set(frames):
        raise LreError(f"{plan.feat_dir}: job outputs of {plan.name} disagree (scp vs "
                       f"manifest); re-run with --force")
    data_dir = plan.data_dir
    failed_path = data_dir / "feats_failed"
    failed_path.unlink(missing_ok=True)
    _concurrently([
        # States computed on read: no feats.scp (the readers encode wav.scp's audio).
        lambda: None if on_read else write_table(data_dir / "feats.scp", feats),
        lambda: write_table(data_dir / "vad.scp", vads),
        lambda: write_table(data_dir / "utt2num_frames", frames),
        lambda: write_table(failed_path, report.failed) if report.failed else None,
        lambda: atomic_write_text(data_dir / "feats_config.json", plan.config_text),
    ])
    report.num_done = len(frames)


def _check_failures(plan: _StagePlan, report: FeatureReport, max_fail_share: float) -> None:
    """Log the skipped utterances; raise when more than ``max_fail_share`` of them failed."""
    if not report.failed:
        return
    failed_path = plan.data_dir / "feats_failed"
    shown = c_sorted(report.failed)[:5]
    logger.warning("%s: %d utterance(s) skipped, listed in %s: %s%s", plan.data_dir,
                   len(report.failed), failed_path,
                   "; ".join(f"{u} ({report.failed[u]})" for u in shown),
                   " ..." if len(report.failed) > len(shown) else "")
    share = len(report.failed) / plan.num_utts
    if share > max_fail_share:
        raise LreError(f"{failed_path}: {len(report.failed)} of {plan.num_utts} utterances "
                       f"failed ({share:.0%} > --max-fail-share {max_fail_share:.0%})")


def _remove_stale_jobs(feat_dir: Path, kind: str, name: str, nj: int) -> None:
    """Delete job files of an earlier run with more jobs (indices above ``nj``)."""
    for pattern in (f"raw_{kind}_{name}.*.*", f"vad_{name}.*.*"):
        for path in feat_dir.glob(pattern):
            rest = path.name.split(f"_{name}.", 1)[1]
            index, _, ext = rest.partition(".")
            if index.isdigit() and int(index) > nj and ext in ("ark", "scp", "done.json"):
                path.unlink(missing_ok=True)


def _concurrently(tasks: Sequence[Any]) -> None:
    """Run small I/O tasks side by side: each atomic write waits on its own fsync."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


# ----------------------------------------------------------------------------------------
# Command line: `lre features` and the job worker `python -m lre.features.stage job`
# ----------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> FeatureConfig:
    """The FeatureConfig named by ``--feature-type`` / ``--*-conf`` options."""
    if args.feat_conf is None:
        if args.sdc_conf is not None:
            raise LreError("--sdc-conf needs --feat-conf (an MFCC config)")
        cfg = FeatureConfig.default(args.feature_type)
        if args.vad_conf is not None or args.cmvn_conf is not None:
            vad = (apply_conf(KALDI_VAD_DEFAULTS, read_conf(args.vad_conf), "compute-vad")
                   if args.vad_conf else cfg.vad)
            cmvn = (apply_conf(KALDI_CMVN_DEFAULTS, read_conf(args.cmvn_conf), "cmvn")
                    if args.cmvn_conf else cfg.cmvn)
            cfg = dataclasses.replace(cfg, vad=vad, cmvn=cmvn)
        return cfg
    kind = args.feature_type if args.feature_type_given else None
    cfg = FeatureConfig.from_files(args.feat_conf, args.vad_conf, args.cmvn_conf,
                                   args.sdc_conf, kind=kind)
    if getattr(args, "storage", None):
        if not cfg.is_encoder:
            raise LreError(f"--storage={args.storage}: only encoder states have a storage "
                           f"choice; {args.feat_conf} is {cfg.kind}")
        cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder,
                                                                   storage=args.storage))
    return cfg


class _TypeAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        namespace.feature_type = values
        namespace.feature_type_given = True


def cli_features_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data dir (data/<set>)")
    parser.add_argument("exp", nargs="?", default=None,
                        help="stage dir; job logs go to EXP/log (default exp/make_feats/<set>)")
    parser.add_argument("feat_dir", nargs="?", default=None,
                        help="where the ark/scp files go (default <data>/data)")
    parser.add_argument("--feature-type", default="fbank", action=_TypeAction,
                        choices=["fbank", "fbank80", "mfcc", "mfcc_sdc"],
                        help="shipped configuration to use when --feat-conf is not given")
    parser.set_defaults(feature_type_given=False)
    parser.add_argument("--feat-conf", default=None,
                        help="Kaldi fbank/mfcc conf file (e.g. features/fbank.conf)")
    parser.add_argument("--vad-conf", default=None, help="compute-vad conf (features/vad.conf)")
    parser.add_argument("--cmvn-conf", default=None, help="CMVN conf (features/cmvn.conf)")
    parser.add_argument("--sdc-conf", default=None,
                        help="add-deltas-sdc conf (features/sdc.conf); implies mfcc_sdc")
    parser.add_argument("--storage", default=None, choices=["float32", "compressed", "none"],
                        help="encoder states: override the conf's --storage (none: store the "
                             "VAD only and encode the audio whenever it is read)")
    parser.add_argument("--nj", type=int, default=1, help="parallel jobs")
    parser.add_argument("--cmd", default="",
                        help="job runner: empty = local; a prefix such as 'srun -n1'; or a "
                             "Kaldi script such as queue.pl (called as CMD LOG COMMAND)")
    parser.add_argument("--max-fail-share", type=float, default=0.1,
                        help="fail when more than this share of utterances is skipped")
    parser.add_argument("--force", action="store_true", help="recompute every job")


def cli_features(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    data = Path(args.data)
    exp = Path(args.exp) if args.exp else Path("exp") / "make_feats" / data.resolve().name
    # compute_features logs its report's summary
    compute_features(data, config, nj=args.nj, cmd=args.cmd, feat_dir=args.feat_dir,
                     log_dir=exp / "log", max_fail_share=args.max_fail_share, force=args.force)
    return 0


def _job_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lre.features.stage job",
                                description="one job of the feature stage (one split part)")
    p.add_argument("split_dir")
    p.add_argument("--config", required=True, help="feats_config.json of the stage")
    p.add_argument("--feat-dir", required=True)
    p.add_argument("--name", required=True, help="data set name used in file names")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory in this (worker) process instead of returning it.

    Every utterance allocates arrays of the same few sizes (audio, frames, spectra); by
    default glibc hands each back to the kernel and the next utterance faults the pages
    in again, which costs the job a fifth of its time. Not glibc: nothing to do.
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 << 20)
        libc.mallopt(m_trim_threshold, 256 << 20)
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lre.features.stage job ...``: the worker each stage job runs."""
    from lre.utils import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "job":
        print("usage: python -m lre.features.stage job --config FILE --feat-dir DIR --name NAME "
              "--index I SPLIT_DIR   (the stage itself is `lre features`)", file=sys.stderr)
        return 2
    args = _job_parser().parse_args(argv[1:])
    setup_logging(None, args.verbose)
    _keep_freed_memory()
    try:
        with open(args.config, encoding="utf-8") as f:
            config = FeatureConfig.from_dict(json.load(f))
        run_job(args.split_dir, config, args.feat_dir, args.name, args.index)
    except LreError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
