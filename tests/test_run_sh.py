"""``run.sh`` end to end on a tiny embedded corpus: every stage, real audio, real training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Outputs of this tiny run, kept to show that changes to the code's layout leave what the
#: pipeline computes unchanged. A change meant to alter the numbers (a new model default,
#: a new feature) writes new references from its own run, and says so.
GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_run"
GOLDEN_TOL = 1e-6
# Inputs of evaluate, not its results: where the files lay on the machine that made them.
_PATH_KEYS = {"scores", "llr", "data", "report", "plots", "out_dir", "source"}

# The recipe's corpus and training knobs are pinned, so that the golden outputs change only
# when the code does, not when the recipe's defaults do.
TINY_PREPARE = (
    "--langs en,fi,ru --train-per-lang 4 --dev-per-lang 2 --test-per-lang 2 --no-progress "
    "--train-voice-mix 0 --oos-per-lang 2 --other-per-lang 0"
)
TINY_TRAIN = (
    "--set train.epochs=2 --set train.progress=false --set model.hidden1=16 "
    "--set model.hidden2=16 --set model.hidden3=16 --set model.attention=8 --set model.dense=16 "
    "--set model.segment_pooling=last --set model.front=none --set model.timeline_context=0 "
    "--set model.window_shift=10 --set model.segment_windows=10 "
    "--set augment.freq_warp=0.15 --set augment.freq_masks=0 --set augment.time_masks=0"
)


#: A TDNN of the same tiny size, to fuse with the tiny HGRU.
TINY_TDNN = ("--set train.epochs=2 --set train.progress=false --set model.channels=16 "
             "--set model.stats_channels=32 --set model.embedding=16")


def run_sh(tmp_path: Path, *args: str, train_opts: str = TINY_TRAIN
           ) -> subprocess.CompletedProcess:
    env = dict(os.environ, LRE_SKIP_APT="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [
            "bash", str(ROOT / "run.sh"),
            "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"),
            "--nj", "2", "--prepare-opts", TINY_PREPARE, "--train-opts", train_opts,
            "--train-augment-opts", "none", "--dev-sets", "dev_noisy", *args,
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
    for f in ("final.pt", "best.pt", "config.yaml", "lang2id", "metrics.csv", "calibration.json",
              "openset.json"):
        assert (exp / f).exists(), f
    assert (exp / "log" / "train.log").exists()

    test_utts = (data / "test" / "utt2lang").read_text().split("\n")
    test_utts = sorted(line.split()[0] for line in test_utts if line)
    header, *rows = (exp / "test" / "scores.tsv").read_text().splitlines()
    assert header.split("\t") == ["utt", "en", "fi", "ru"]
    assert sorted(r.split("\t")[0] for r in rows) == test_utts

    records = [json.loads(line) for line in (exp / "test" / "attention.jsonl").open()]
    assert sorted(r["id"] for r in records) == test_utts
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

    assert_golden(exp)
    # the language-turn decoder's settings, chosen on dev_cs and used for test_cs
    decoder = json.loads((exp / "segment.json").read_text())
    assert decoder["chosen_on"]["data"] == str(data / "dev_cs")
    seg = json.loads((exp / "test_cs" / "results.json").read_text())["segmentation"]
    assert seg["decoder"] == {k: decoder[k] for k in seg["decoder"]}
    # the conditions table over dev, the dev condition asked for and the test sets, from
    # each set's results.json (stage 0 built the dev conditions, stages 1 and 3 scored it)
    combined = json.loads((exp / "results.json").read_text())
    assert list(combined["conditions"])[:3] == ["dev", "dev_noisy", "test"]
    assert (data / "dev_reverb" / "utt2aug").is_file() and not (exp / "dev_reverb").exists()
    assert combined["conditions"]["dev_noisy"]["num_utts"] == 6
    assert combined["conditions"]["test"]["accuracy"] == results["accuracy"]
    assert combined["conditions"]["test"]["raw"]["Cllr"] == results["raw"]["Cllr"]
    assert "| condition | utts |" in proc.stdout and "\n| test | 6 |" in proc.stdout
    assert "(test/report.md)" in (exp / "report.md").read_text()

    # A second run finds every stage done and redoes nothing.
    before = (exp / "final.pt").stat().st_mtime_ns
    again = run_sh(tmp_path, "--stop-stage", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping" in again.stderr
    assert (exp / "final.pt").stat().st_mtime_ns == before
    check_fusion(tmp_path)


def check_fusion(tmp_path: Path) -> None:
    """A tiny TDNN beside the HGRU, then --model fusion of the two: stage 3 fits the
    fusion on their raw dev scores and scores the test sets with both, stage 4 sets the
    fusion beside them."""
    from lre.fusion import apply_fusion, load_fusion

    missing = run_sh(tmp_path, "--stage", "2", "--model", "fusion")
    assert missing.returncode == 1
    assert "no " + str(tmp_path / "exp" / "tdnn" / "dev" / "scores_raw.tsv") in missing.stderr
    assert "run stages 2-4 of --model tdnn first" in missing.stderr
    tdnn = run_sh(tmp_path, "--stage", "2", "--model", "tdnn", train_opts=TINY_TDNN)
    assert tdnn.returncode == 0, tdnn.stderr[-3000:]
    proc = run_sh(tmp_path, "--stage", "2", "--model", "fusion")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "exp"
    assert "a fusion has nothing to train" in proc.stderr
    fusion = load_fusion(exp / "fusion")
    assert fusion["subsystems"] == ["../hgru", "../tdnn"]
    assert (exp / "fusion" / "openset.json").is_file()
    utts, langs, fused = _table(exp / "fusion" / "test" / "scores.tsv")
    subsystems = [_table(exp / m / "test" / "scores_raw.tsv") for m in ("hgru", "tdnn")]
    assert all(u == utts and lg == langs for u, lg, _ in subsystems)
    np.testing.assert_allclose(fused, apply_fusion(fusion, [t for *_, t in subsystems]),
                               atol=1e-5)
    combined = json.loads((exp / "fusion" / "results.json").read_text())
    assert list(combined["systems"]) == ["fusion", "hgru", "tdnn"]
    # the fusion scores dev itself (its calibration is fitted on its models' dev scores)
    assert list(combined["conditions"])[:2] == ["dev", "dev_noisy"]
    assert (exp / "fusion" / "dev" / "scores.tsv").is_file()
    assert combined["systems"]["tdnn"]["test"]["accuracy"] == json.loads(
        (exp / "tdnn" / "test" / "results.json").read_text())["accuracy"]
    assert "## Systems side by side" in (exp / "fusion" / "report.md").read_text()


def test_run_sh_rejects_unknown_option(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "--no-such-option", "1"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "unknown option --no-such-option" in proc.stderr


def _table(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    header, *rows = path.read_text().splitlines()
    cells = [r.split("\t") for r in rows]
    return (header.split("\t"), [c[0] for c in cells],
            np.array([[float(v) for v in c[1:]] for c in cells]))


def _numbers_close(ours, ref, where: str) -> None:
    if isinstance(ref, dict):
        assert isinstance(ours, dict), where
        keys = set(ref) - _PATH_KEYS
        assert keys <= set(ours), f"{where}: missing {sorted(keys - set(ours))}"
        for k in keys:
            _numbers_close(ours[k], ref[k], f"{where}.{k}")
    elif isinstance(ref, list):
        assert isinstance(ours, list) and len(ours) == len(ref), where
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            _numbers_close(a, b, f"{where}[{i}]")
    elif isinstance(ref, bool) or ref is None or isinstance(ref, str):
        assert ours == ref, f"{where}: {ours!r} != {ref!r}"
    else:
        # values written with 6 decimals: one unit in the last place, as for the tables
        assert ours == pytest.approx(ref, abs=GOLDEN_TOL + 1e-9, nan_ok=True), where


def _record_values(rec: dict) -> tuple:
    """What an attention record says, whatever the layout's key names."""
    rid = rec.get("id", rec.get("utt"))
    decision = rec.get("decision", rec.get("pred"))
    segments = [(s["start"], s["end"], s["weight"]) for s in rec["segments"]]
    return rid, decision, rec["posteriors"], segments


def assert_golden(exp: Path) -> None:
    """Scores, LLRs, results and attention of the run equal the kept references."""
    for name, ref_name in (("test/scores.tsv", "scores.tsv"),
                           ("test/scores_raw.tsv", "scores_raw.tsv"),
                           ("test/llr.tsv", "llr.tsv"), ("dev/scores.tsv", "dev_scores.tsv")):
        ours, ref = _table(exp / name), _table(GOLDEN / ref_name)
        assert ours[:2] == ref[:2], name
        np.testing.assert_allclose(ours[2], ref[2], atol=GOLDEN_TOL + 1e-9, err_msg=name)
    _numbers_close(json.loads((exp / "test" / "results.json").read_text()),
                   json.loads((GOLDEN / "results.json").read_text()), "results.json")
    ours = [_record_values(json.loads(x)) for x in (exp / "test" / "attention.jsonl").open()]
    refs = [_record_values(json.loads(x)) for x in (GOLDEN / "attention.jsonl").open()]
    assert [r[:2] for r in ours] == [r[:2] for r in refs]
    for a, b in zip(ours, refs, strict=True):
        _numbers_close(a[2], b[2], f"{a[0]} posteriors")
        np.testing.assert_allclose(np.array(a[3]), np.array(b[3]), atol=GOLDEN_TOL + 1e-9,
                                   err_msg=f"{a[0]} segments")


def run_sh_plain(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """run.sh on tmp_path/{data,exp} with only the options given."""
    env = dict(os.environ, LRE_SKIP_APT="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        ["bash", str(ROOT / "run.sh"), "--data-dir", str(tmp_path / "data"),
         "--exp-dir", str(tmp_path / "exp"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def _scored_by_hand(tmp_path: Path, name: str, right: int) -> None:
    """data/<name> of 4 utterances (en, fi, en, fi) and exp/hgru/<name> scored as if by stage
    3, the first ``right`` of them answered right."""
    from lre.metrics import write_scores

    langs, labels = ["en", "fi"], [0, 1, 0, 1]
    data = tmp_path / "data" / name
    data.mkdir(parents=True)
    (data / "utt2lang").write_text("".join(f"u{i} {langs[k]}\n" for i, k in enumerate(labels)))
    post = np.array([[.9, .1] if (k == 0) == (i < right) else [.1, .9]
                     for i, k in enumerate(labels)])
    scores = tmp_path / "exp" / "hgru" / name
    write_scores(scores / "scores.tsv", [f"u{i}" for i in range(4)], langs, np.log(post))
    (scores / "attention.jsonl").write_text("")


def test_run_sh_evaluates_every_test_set_and_skips_missing_ones(tmp_path: Path) -> None:
    """Stages 3-4 over hand-made scores: the dev scores and calibration exist, so stage 3
    skips; stage 4 evaluates each present test set and writes the conditions table."""
    for name, right in (("test", 4), ("test_noisy", 2)):
        _scored_by_hand(tmp_path, name, right)
    exp = tmp_path / "exp" / "hgru"
    (exp / "dev").mkdir()
    (exp / "dev" / "attention.jsonl").write_text("")
    (exp / "calibration.json").write_text("{}")
    args = ("--stage", "3", "--stop-stage", "4", "--test-sets", "test test_human test_noisy test")
    proc = run_sh_plain(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    missing = f"test set test_human: no {tmp_path / 'data' / 'test_human'}; skipped"
    assert proc.stderr.count(missing) == 1, proc.stderr
    assert "calibration.json exists; skipping dev" in proc.stderr
    for name in ("test", "test_noisy"):
        assert f"{exp / name / 'attention.jsonl'} exists; skipping" in proc.stderr
        assert (exp / name / "results.json").exists() and (exp / name / "report.md").exists()
    combined = json.loads((exp / "results.json").read_text())
    assert list(combined["conditions"]) == ["test", "test_noisy"]
    assert combined["conditions"]["test_noisy"]["accuracy"] == 0.5
    table = proc.stdout[proc.stdout.index("| condition |"):]
    assert "| test | 4 | 100.00 |" in table and "| test_noisy | 4 | 50.00 |" in table
    assert "[test_noisy/report.md](test_noisy/report.md)" in (exp / "report.md").read_text()

    # Again: every set is evaluated already; the table is printed all the same.
    before = (exp / "test" / "results.json").stat().st_mtime_ns
    again = run_sh_plain(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("results.json is up to date; skipping") == 2
    assert (exp / "test" / "results.json").stat().st_mtime_ns == before
    assert "| test_noisy | 4 | 50.00 |" in again.stdout
    # New scores are evaluated again.
    (exp / "test_noisy" / "scores.tsv").touch()
    again = run_sh_plain(tmp_path, *args)
    assert again.stderr.count("results.json is up to date; skipping") == 1
    # Sets are evaluated in parallel jobs: one that fails stops the run once the others
    # are done, naming its log and the cause.
    (exp / "test_noisy" / "scores.tsv").unlink()
    failed = run_sh_plain(tmp_path, *args, "--nj", "2")
    assert failed.returncode != 0
    log = exp / "log" / "evaluate_test_noisy.log"
    assert f"failed; see {log}" in failed.stderr
    assert failed.stderr.rstrip().endswith("scores.tsv: file not found"), failed.stderr[-500:]


def test_run_sh_puts_dev_and_its_conditions_above_the_test_sets(tmp_path: Path) -> None:
    """The recipe's dev_sets (dev_noisy ...) that exist are evaluated with dev and head the
    conditions table; a missing one is said once."""
    for name, right in (("dev", 3), ("dev_noisy", 1), ("test", 4), ("test_noisy", 2)):
        _scored_by_hand(tmp_path, name, right)
    exp = tmp_path / "exp" / "hgru"
    (exp / "calibration.json").write_text("{}")
    proc = run_sh_plain(tmp_path, "--stage", "3", "--stop-stage", "4",
                        "--test-sets", "test test_noisy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count(f"dev set dev_reverb: no {tmp_path / 'data' / 'dev_reverb'}; "
                             "skipped") == 1, proc.stderr
    combined = json.loads((exp / "results.json").read_text())
    assert list(combined["conditions"]) == ["dev", "dev_noisy", "test", "test_noisy"]
    assert combined["conditions"]["dev"]["accuracy"] == 0.75
    assert combined["conditions"]["dev_noisy"]["accuracy"] == 0.25
    assert "| dev_noisy | 4 | 25.00 |" in proc.stdout
    # --dev-sets none: the test sets alone
    proc = run_sh_plain(tmp_path, "--stage", "4", "--test-sets", "test test_noisy",
                        "--dev-sets", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    combined = json.loads((exp / "results.json").read_text())
    assert list(combined["conditions"]) == ["test", "test_noisy"]


def test_run_sh_trains_on_the_augmented_training_set(tmp_path: Path, tone_wav) -> None:
    """train_augment_opts: stage 0 writes data/train_aug (originals kept), once."""
    corpus = tmp_path / "corpus"
    for name in ("train", "dev", "test"):
        utts = [f"{lang}-s{i}-{name}" for lang in ("en", "fi") for i in range(2)]
        d = corpus / name
        d.mkdir(parents=True)
        (d / "wav.scp").write_text("".join(
            f"{u} {tone_wav(tmp_path / 'wav' / f'{u}.wav', 1.0, freq=300 + 50 * k)}\n"
            for k, u in enumerate(utts)))
        (d / "utt2lang").write_text("".join(f"{u} {u[:2]}\n" for u in utts))
        (d / "utt2spk").write_text("".join(f"{u} {u[:5]}\n" for u in utts))
    args = ("--recipe", "kaldi", "--corpus", str(corpus), "--stage", "0", "--stop-stage", "0",
            "--nj", "1", "--train-augment-opts", "--speed 0.9", "--test-sets", "test test_tel")
    proc = run_sh_plain(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"test set test_tel: no {tmp_path / 'data' / 'test_tel'}; skipped" in proc.stderr
    aug = tmp_path / "data" / "train_aug"
    utts = sorted(line.split()[0] for line in (aug / "utt2lang").read_text().splitlines())
    train = sorted(line.split()[0] for line in
                   (tmp_path / "data" / "train" / "utt2lang").read_text().splitlines())
    assert utts == sorted(train + [f"sp0.9-{u}" for u in train])
    again = run_sh_plain(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train_aug is made with these options; skipping" in again.stderr
    # stage 1 makes the features of the set trained on
    feats = run_sh_plain(tmp_path, *args[:4], "--stage", "1", "--stop-stage", "1", "--nj", "1",
                         "--train-augment-opts", "--speed 0.9")
    assert feats.returncode == 0, feats.stderr[-3000:]
    assert (aug / "feats.scp").stat().st_size > 0
    assert not (tmp_path / "data" / "train" / "feats.scp").exists()
