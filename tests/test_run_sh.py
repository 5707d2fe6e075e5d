"""``run.sh`` end to end on a tiny embedded corpus: every stage, real audio, real training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_PREPARE = (
    "--langs en,fi,ru --train-per-lang 4 --dev-per-lang 2 --test-per-lang 2 --no-progress"
)
TINY_TRAIN = (
    "--set train.epochs=2 --set train.progress=false --set model.hidden1=16 "
    "--set model.hidden2=16 --set model.hidden3=16 --set model.attention=8 --set model.dense=16"
)


def run_sh(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LRE_SKIP_APT="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [
            "bash", str(ROOT / "run.sh"),
            "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"),
            "--nj", "2", "--prepare-opts", TINY_PREPARE, "--train-opts", TINY_TRAIN, *args,
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_run_sh_all_stages_then_rerun_skips(tmp_path: Path) -> None:
    proc = run_sh(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data, exp = tmp_path / "data", tmp_path / "exp" / "hgru"
    for s in ("train", "dev", "test"):
        for f in ("wav.scp", "utt2lang", "utt2spk", "feats.scp", "vad.scp", "utt2num_frames"):
            assert (data / s / f).stat().st_size > 0, f"{s}/{f}"
    for f in ("final.pt", "best.pt", "config.yaml", "lang2id", "metrics.csv", "calibration.json"):
        assert (exp / f).exists(), f
    assert (exp / "log" / "train.log").exists()

    test_utts = (data / "test" / "utt2lang").read_text().split("\n")
    test_utts = sorted(line.split()[0] for line in test_utts if line)
    header, *rows = (exp / "test" / "scores.tsv").read_text().splitlines()
    assert header.split("\t") == ["utt", "en", "fi", "ru"]
    assert sorted(r.split("\t")[0] for r in rows) == test_utts

    records = [json.loads(line) for line in (exp / "test" / "attention.jsonl").open()]
    assert sorted(r["utt"] for r in records) == test_utts
    for r in records:
        weights = [s["weight"] for s in r["segments"]]
        assert weights and abs(sum(weights) - 1) < 1e-2
        assert all(s["end"] > s["start"] >= 0 for s in r["segments"])

    results = json.loads((exp / "test" / "results.json").read_text())
    for key in ("accuracy", "cavg", "eer", "cllr"):
        assert any(key in k.lower() for k in results), key
    report = (exp / "test" / "report.md").read_text()
    assert "confusion" in report.lower()
    assert "report.md" in proc.stdout + proc.stderr

    # A second run finds every stage done and redoes nothing.
    before = (exp / "final.pt").stat().st_mtime_ns
    again = run_sh(tmp_path, "--stop-stage", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping" in again.stderr
    assert (exp / "final.pt").stat().st_mtime_ns == before


def test_run_sh_rejects_unknown_option(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "--no-such-option", "1"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "unknown option --no-such-option" in proc.stderr
