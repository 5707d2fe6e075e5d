"""``./run.sh --recipe voxlingua107`` end to end on a tiny corpus in the real layout, where two
of the three languages have a single video: dev then lacks them, and every stage still runs
(stage 3 fits a calibration that needs no dev utterance of them, and says so once)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from test_run_sh import ROOT, TINY_TRAIN

SR = 16000


def _tone(path: Path, seconds: float, freq: float, seed: int) -> None:
    """A tone with vibrato and a little noise: voiced for the energy VAD."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    audio = 0.3 * np.sin(2 * np.pi * freq * t + 3 * np.sin(2 * np.pi * 5 * t))
    audio += 0.01 * rng.normal(size=len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), SR, subtype="PCM_16")


def make_corpus(root: Path) -> Path:
    """en: three videos of two segments; fi and sv: one video of three segments each;
    dev/ (the official dev set, the recipe's test set): one segment per language."""
    videos = {"en": [2, 2, 2], "fi": [3], "sv": [3]}
    freq = {"en": 180.0, "fi": 300.0, "sv": 450.0}
    seed = 0
    for lang, counts in videos.items():
        for v, n in enumerate(counts):
            for s in range(n):
                start = 20.0 * s
                name = f"{lang}Vid{v}-x__U__S{s}---{start:08.3f}-{start + 2.0:08.3f}.wav"
                _tone(root / lang / name, 2.0, freq[lang] * (1 + 0.03 * v + 0.01 * s), seed)
                seed += 1
        name = f"{lang}DevVid__U__S0---0001.000-0003.000.wav"
        _tone(root / "dev" / lang / name, 2.0, freq[lang] * 1.02, seed)
        seed += 1
    return root


def test_run_sh_voxlingua107_with_single_video_languages(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "voxlingua107")
    env = dict(os.environ, LRE_SKIP_APT="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "--recipe", "voxlingua107", "--corpus", str(corpus),
         "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"),
         "--nj", "1", "--nproc", "1", "--prepare-opts", "--dev-per-lang 2",
         "--train-opts", TINY_TRAIN],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data, exp = tmp_path / "data", tmp_path / "exp" / "hgru"
    dev_langs = set((data / "dev" / "utt2lang").read_text().split()[1::2])
    assert dev_langs == {"en"}
    assert "dev: nothing held out for fi, sv" in proc.stdout + proc.stderr

    calib = json.loads((exp / "calibration.json").read_text())
    assert calib["langs"] == ["en", "fi", "sv"]
    # two dev utterances of one language: too few even for a temperature
    assert calib["method"] == "none"
    assert set(calib["selection"]["not_fitted"]) == {"affine", "logreg", "temperature"}
    log = (exp / "log" / "calibrate.log").read_text()
    assert log.count("WARNING") == 1 and "no dev utterances of fi, sv" in log

    results = json.loads((exp / "test" / "results.json").read_text())
    assert results["num_utts"] == 3 and results["langs"] == ["en", "fi", "sv"]
    assert results["calibration"]["raised"] == []  # none: the raw scores, nothing worse
    combined = json.loads((exp / "results.json").read_text())
    assert list(combined["conditions"]) == ["test"]
