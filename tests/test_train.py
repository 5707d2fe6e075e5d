"""Training stage: overfitting real features, exact resume, DDP on gloo, config errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from test_dataset import REPO, make_corpus

from lre.train import augment_features, evaluate, parse_overrides, resolve_config, train
from lre.utils import LreError

# A small HGRU (same geometry as the default) that trains in seconds. One thread: on a busy
# 2-core machine two threads wait on each other far more than they gain.
TINY = ["model.hidden1=32", "model.hidden2=32", "model.hidden3=32", "model.attention=16",
        "model.dense=32"]
FAST = [*TINY, "data.batch_size=4", "data.crop_min_seconds=2", "data.crop_max_seconds=3",
        "train.progress=false", "train.threads=1"]
OVERFIT = [*FAST, "model.dropout=0", "train.epochs=40", "optim.lr=0.003",
           "schedule.warmup_epochs=0.5", "train.patience=10"]


@pytest.fixture
def corpus(espeak_wav, tmp_path_factory, tmp_path):
    return make_corpus(espeak_wav, tmp_path_factory.getbasetemp(), tmp_path / "data")


def test_tiny_model_overfits_tiny_real_corpus(corpus, tmp_path):
    from lre.dataset import make_eval_loader
    from lre.models import load_model

    exp = tmp_path / "exp"
    result = train(corpus, exp, dev_dir=corpus, model="hgru", overrides=OVERFIT)
    assert result.finished
    best = max(h["dev_acc"] for h in result.history)
    assert best == 1.0, [round(h["dev_acc"], 3) for h in result.history]

    # final.pt holds the best weights and, re-loaded, classifies every training utterance.
    model, meta = load_model(exp / "final.pt")
    assert meta["langs"] == ["de", "en", "es"] and meta["model_name"] == "hgru"
    stats = evaluate(model, make_eval_loader(corpus, {"de": 0, "en": 1, "es": 2}))
    assert stats.count == 12 and stats.correct == 12

    # The experiment dir.
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    assert cfg == resolve_config("hgru", None, OVERFIT)
    assert cfg["model"]["hidden1"] == 32 and cfg["optim"]["lr"] == 0.003
    assert (exp / "lang2id").read_text() == "de 0\nen 1\nes 2\n"
    assert (exp / "feats_config.json").read_text() == (corpus / "feats_config.json").read_text()
    with open(exp / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [h["epoch"] for h in result.history]
    assert float(rows[-1]["frames_per_s"]) > 0 and float(rows[0]["lr"]) > 0
    assert (exp / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (exp / "log" / "train.log").read_text()
    assert "epoch 1/40: train loss" in log and "done:" in log
    kept = sorted(p.name for p in (exp / "checkpoints").iterdir())
    last = result.history[-1]["epoch"]
    assert kept == [f"epoch-{e:04d}.pt" for e in range(last - 2, last + 1)]


def test_resume_gives_the_same_weights(corpus, tmp_path):
    # Dropout and augmentation draw random numbers: the RNG state must be restored too.
    settings = [*FAST, "train.epochs=2", "optim.lr=0.005", "augment.freq_warp=0.1",
                "augment.freq_masks=1", "augment.time_masks=1"]
    train(corpus, tmp_path / "a", dev_dir=corpus, overrides=settings)
    first = train(corpus, tmp_path / "b", dev_dir=corpus, overrides=settings,
                  stop_after_epochs=1)
    assert not first.finished and not (tmp_path / "b" / "final.pt").exists()
    # What a kill -9 can leave behind: a temp file of an unfinished write; and a damaged
    # newer checkpoint is passed over too.
    ckpts = tmp_path / "b" / "checkpoints"
    (ckpts / ".epoch-0002.pt.x1y2.tmp").write_bytes(b"partial")
    (ckpts / "epoch-0002.pt").write_bytes(b"not a checkpoint")
    resumed = train(corpus, tmp_path / "b", dev_dir=corpus, overrides=settings, resume=True)
    assert resumed.finished

    a = torch.load(tmp_path / "a" / "checkpoints" / "epoch-0002.pt", weights_only=True)
    b = torch.load(ckpts / "epoch-0002.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                      strict=True):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] > 0
    assert a["progress"] == b["progress"] | {"history": a["progress"]["history"]}
    assert [h["train_loss"] for h in a["progress"]["history"]] == [
        h["train_loss"] for h in b["progress"]["history"]]
    with pytest.raises(LreError, match="holds checkpoints of an earlier run"):
        train(corpus, tmp_path / "a", overrides=settings)


def test_weight_averaging_is_the_mean_of_the_last_epochs_and_resumes(corpus, tmp_path):
    from lre.models import load_model

    plain = [*FAST, "train.epochs=3", "optim.lr=0.005", "augment.freq_warp=0.1"]
    settings = [*plain, "train.average_last=2", "train.final_weights=average",
                "train.keep_checkpoints=3"]
    a = train(corpus, tmp_path / "a", dev_dir=corpus, overrides=settings)
    assert [h.get("avg_dev_acc") is not None for h in a.history] == [False, True, True]
    # Averaging (and scoring the average on dev) leaves the training itself unchanged.
    p = train(corpus, tmp_path / "p", dev_dir=corpus, overrides=plain)
    assert [h["train_loss"] for h in p.history] == [h["train_loss"] for h in a.history]
    ckpts = [torch.load(tmp_path / "a" / "checkpoints" / f"epoch-{e:04d}.pt",
                        weights_only=True)["model"] for e in (2, 3)]
    final, meta = load_model(tmp_path / "a" / "final.pt")
    extra = meta["extra"]
    assert extra["final_weights"] == "average" and extra["averaged_epochs"] == 2
    assert extra["dev_acc"] == a.history[-1]["avg_dev_acc"]
    for key, value in final.state_dict().items():
        torch.testing.assert_close(value, (ckpts[0][key] + ckpts[1][key]) / 2, rtol=0,
                                   atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")
    assert not torch.equal(ckpts[0]["classifier.0.weight"], ckpts[1]["classifier.0.weight"])
    with open(tmp_path / "a" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["avg_dev_acc"] != "" for r in rows] == [False, True, True]

    # Interrupted inside the averaging window, resumed: the same average.
    train(corpus, tmp_path / "b", dev_dir=corpus, overrides=settings, stop_after_epochs=2)
    train(corpus, tmp_path / "b", dev_dir=corpus, overrides=settings, resume=True)
    resumed, _ = load_model(tmp_path / "b" / "final.pt")
    for key, value in final.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key

    with pytest.raises(LreError, match="average needs train.average_last >= 1"):
        resolve_config("hgru", None, ["train.final_weights=average"])


def test_two_process_gloo_ddp(corpus, tmp_path):
    from lre.models import load_model

    exp = tmp_path / "exp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           "--nproc_per_node=2", "-m", "lre.train", "--train", str(corpus), "--dev",
           str(corpus), "--exp", str(exp), "--model", "hgru", "--set", *FAST,
           "train.epochs=1", "optim.segment_loss=0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, meta = load_model(exp / "final.pt")
    assert meta["langs"] == ["de", "en", "es"]
    log = (exp / "log" / "train.log").read_text()
    assert "2 process(es)" in log
    # 12 utterances, 4 per batch and process: 3 batches split over 2 ranks -> 2 steps each.
    assert "2 steps per epoch" in log
    ckpt = torch.load(exp / "checkpoints" / "epoch-0001.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2 and ckpt["scheduler"]["last_epoch"] == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key])


def test_segment_loss_is_the_mean_over_real_segments():
    from lre.models.base import ModelOutput
    from lre.training.loop import _segment_loss

    seg = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [9.0, 9.0]],
                        [[0.5, 0.0], [7.0, 7.0], [7.0, 7.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = ModelOutput(torch.zeros(2, 2), torch.zeros(2, 3), mask, torch.zeros(2, 3, 2), seg)
    labels = torch.tensor([0, 1])

    def ce(logits, label):
        return -np.log(np.exp(logits[label]) / np.exp(logits).sum())

    expected = (ce([2.0, 0.0], 0) + ce([0.0, 1.0], 0) + ce([0.5, 0.0], 1)) / 3
    loss = _segment_loss(out, labels, torch.nn.CrossEntropyLoss())
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_augmentation_warps_and_masks_exactly():
    off = {"freq_warp": 0.0, "freq_masks": 0, "freq_mask_width": 8, "time_masks": 0,
           "time_mask_width": 20}
    x = torch.randn(3, 50, 40)
    lengths = torch.tensor([50, 30, 12])
    assert torch.equal(augment_features(x, lengths, off), x)

    torch.manual_seed(1)
    warped = augment_features(x, lengths, {**off, "freq_warp": 0.2})
    torch.manual_seed(1)
    alpha = 1 + (torch.rand(3) * 2 - 1) * 0.2
    for b in range(3):
        src = np.minimum(np.arange(40) * alpha[b].item(), 39)
        ref = np.stack([np.interp(src, np.arange(40), row) for row in x[b].numpy()])
        np.testing.assert_allclose(warped[b].numpy(), ref, atol=1e-5)

    torch.manual_seed(2)
    masked = augment_features(x, lengths, {**off, "freq_masks": 2, "freq_mask_width": 5,
                                           "time_masks": 2, "time_mask_width": 6})
    zero = masked == 0
    for b in range(3):
        dims = zero[b].all(dim=0)  # whole feature dims zeroed
        frames = zero[b].all(dim=1)  # whole frames zeroed
        assert 0 <= dims.sum() <= 10 and 0 <= frames.sum() <= 12
        assert not frames[lengths[b]:].any()  # masks stay inside the utterance
        kept = ~zero[b]
        assert torch.equal(masked[b][kept], x[b][kept])
        assert kept.sum() == (40 - dims.sum()) * (50 - frames.sum())
    torch.manual_seed(2)
    again = augment_features(x, lengths, {**off, "freq_masks": 2, "freq_mask_width": 5,
                                          "time_masks": 2, "time_mask_width": 6})
    assert torch.equal(again, masked) and zero.any()


# --------------------------------------------------------------------------------------------
# Configuration and bad input


def test_config_file_overrides_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: hgru\n  hidden1: 64\noptim:\n  lr: 1e-3\n  name: adamw\n"
                    "train:\n  epochs: 7\n")
    cfg = resolve_config(None, path, ["model.hidden1=32", "optim.lr=2e-3", "data.balance=lang"],
                         seed=5)
    assert cfg["model"]["name"] == "hgru" and cfg["model"]["hidden1"] == 32
    assert cfg["optim"] == {**cfg["optim"], "lr": 0.002, "name": "adamw"}
    assert cfg["train"]["epochs"] == 7 and cfg["train"]["seed"] == 5
    assert cfg["data"]["balance"] == "lang"
    # --set train.seed is more specific than the run's --seed
    assert resolve_config("hgru", None, ["train.seed=1"], seed=0)["train"]["seed"] == 1
    assert resolve_config("hgru", None, ["seed=3"], seed=0)["train"]["seed"] == 3
    assert parse_overrides(["a.b.c=1", "a.d=x y"]) == {"a": {"b": {"c": 1}, "d": "x y"}}
    # A key that only one section has may go without its section.
    bare = resolve_config("hgru", None, ["epochs=5", "lr=0.01", "hidden1=48"])
    assert (bare["train"]["epochs"], bare["optim"]["lr"], bare["model"]["hidden1"]) == (
        5, 0.01, 48)


@pytest.mark.parametrize("setting, message", [
    ("optim.lrr=1", r"--set: unknown key 'optim.lrr' \(did you mean 'optim.lr'\?\)"),
    ("model.hiden1=3", r"--set: unknown key 'model.hiden1' \(did you mean 'model.hidden1'\?\)"),
    ("train.epochs=many", r"--set: train.epochs = 'many' is not an integer"),
    ("optim.name=sgd", r"optim.name: 'sgd' is not one of adam, adamw"),
    ("data.crop_min_seconds=5", r"crop_min_seconds \(5.0\) must be > 0 and <= crop_max"),
    ("optim.lr=0", r"optim.lr: must be > 0"),
    ("oops", r"--set oops: expected section.key=value"),
    ("name=x", r"--set name: ambiguous, say which: model.name, optim.name"),
    ("nonsense=1", r"--set: unknown key 'nonsense'"),
])
def test_bad_settings_are_named(setting, message):
    with pytest.raises(LreError, match=message):
        resolve_config("hgru", None, [setting])


def test_bad_yaml_file_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: [1\n")
    with pytest.raises(LreError, match=r"bad.yaml:\d+: not valid YAML"):
        resolve_config("hgru", path)


def test_impossible_geometry_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(LreError) as err:
        train(corpus, tmp_path / "exp", overrides=[*FAST, "model.window=5",
                                                   "model.window_shift=10"])
    message = str(err.value)
    assert "window_shift (10) must not exceed window (5)" in message and "\n" not in message


def test_dev_language_not_in_train(corpus, tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("feats.scp", "vad.scp", "feats_config.json"):
        (dev / name).write_text((corpus / name).read_text())
    lines = (corpus / "utt2lang").read_text().splitlines()
    (dev / "utt2lang").write_text("".join(
        line.replace(" es", " fi") + "\n" if line.endswith(" es") else line + "\n"
        for line in lines))
    with pytest.raises(LreError, match=r"dev/utt2lang: language\(s\) not in the training data: "
                                       r"fi \(4 utterances\)"):
        train(corpus, tmp_path / "exp", dev_dir=dev, overrides=FAST)


def test_dev_features_of_another_dimension(corpus, tmp_path):
    import kaldiio

    dev = tmp_path / "dev"
    dev.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{dev}/feats.ark,{dev}/feats.scp") as writer:
        writer("en-00", np.zeros((300, 13), dtype=np.float32))
    (dev / "utt2lang").write_text("en-00 en\n")
    with pytest.raises(LreError, match=r"dev/feats.scp: 13-dim features, but the training "
                                       r"features are 40-dim"):
        train(corpus, tmp_path / "exp", dev_dir=dev, overrides=FAST)


def test_cli_reports_one_line_without_traceback(corpus, tmp_path, capsys):
    from lre.cli import main

    rc = main(["train", "--train", str(corpus), "--exp", str(tmp_path / "exp"),
               "--set", "train.epoch=3"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert ("lre train: error: --set: unknown key 'train.epoch' (did you mean 'train.epochs'?)"
            in err)


@pytest.mark.parametrize("name", ["hgru", "bigru", "tdnn", "ecapa"])
def test_recipe_configs_resolve(name):
    cfg = resolve_config(None, REPO / "recipes" / "synth" / "conf" / f"{name}.yaml")
    assert cfg["model"]["name"] == name and cfg["train"]["epochs"] >= 1


def test_an_other_label_trains_one_more_output_kept_apart_at_inference(corpus, tmp_path):
    """es relabelled "other": the model learns three outputs, the model dir answers de/en."""
    import shutil

    from lre.inference.model_dir import load_trained_model
    from lre.languages import OTHER
    from lre.models import load_model
    from lre.score import run_datadir

    data = tmp_path / "data_other"
    shutil.copytree(corpus, data)
    lines = (data / "utt2lang").read_text().splitlines()
    (data / "utt2lang").write_text("".join(
        f"{u} {OTHER if lang == 'es' else lang}\n" for u, lang in (x.split() for x in lines)))
    exp = tmp_path / "exp"
    train(data, exp, dev_dir=data, model="hgru", overrides=[*FAST, "train.epochs=1"])
    assert load_model(exp / "final.pt")[1]["langs"] == ["de", "en", OTHER]
    model = load_trained_model(exp)
    assert model.langs == ["de", "en"]
    results, _, _ = run_datadir(model, data)
    assert len(results) == 12
    assert all(r.logits.shape == (2,) and r.other_logit is not None for r in results.values())
