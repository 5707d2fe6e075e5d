"""lre export: ONNX (dynamic batch and frames) and TorchScript give the model's outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lre.cli import main
from lre.export import OnnxRunner, file_sha256, load_torchscript
from lre.features import FeatureConfig
from lre.identify import Identifier
from lre.models import build_model, load_model, save_model
from lre.utils import LreError

LANGS = ["de", "en", "fr", "it"]
TINY = {"hidden1": 16, "hidden2": 16, "hidden3": 16, "attention": 8, "dense": 16}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A model dir as training writes it, exported by ``lre export --out``."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    tmp = tmp_path_factory.mktemp("export")
    cfg = FeatureConfig()
    torch.manual_seed(3)
    model = build_model("hgru", cfg.feat_dim, len(LANGS), TINY)
    exp = tmp / "exp"
    exp.mkdir()
    save_model(exp / "final.pt", model, LANGS)
    (exp / "feats_config.json").write_text(json.dumps(cfg.to_dict()))
    assert main(["export", "--model-dir", str(exp), "--out", str(tmp / "out")]) == 0
    wav = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "it", "-w", str(wav),
                    "Buongiorno, come state oggi? Il tempo è bello e caldo, andiamo al mare."],
                   check=True, capture_output=True)
    return {"exp": exp, "out": tmp / "out", "wav": wav}


def _random_batch(lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 40, generator=g)
    return x, torch.tensor(lengths, dtype=torch.int64)


def test_export_writes_both_files_with_what_identify_needs(exported):
    out = exported["out"]
    assert (out / "model.onnx").stat().st_size > 0 and (out / "model.ts").stat().st_size > 0
    assert (out / "feats_config.json").read_text() == \
        (exported["exp"] / "feats_config.json").read_text()
    # The checkpoint's hash is kept, so a model.onnx from other weights is never used.
    meta = OnnxRunner(out / "model.onnx").metadata
    assert meta["checkpoint_sha256"] == file_sha256(exported["exp"] / "final.pt")


def test_onnx_has_dynamic_batch_and_frames(exported):
    model, _ = load_model(exported["exp"] / "final.pt")
    runner = OnnxRunner(exported["out"] / "model.onnx")
    assert runner.langs == LANGS
    for lengths in ([57], [310, 1234, 250], [2000, 2000]):
        x, n = _random_batch(lengths, seed=len(lengths))
        feats = [x[i, :k].numpy() for i, k in enumerate(lengths)]
        got = runner.run(feats, timeline=True)
        with torch.no_grad():
            ref = model(x, n)
            seg = model.segment_logits(x, n)
        for i, g in enumerate(got):
            m = ref.segment_mask[i]
            np.testing.assert_allclose(g.logits, ref.logits[i].numpy(), atol=1e-5)
            np.testing.assert_allclose(g.attention, ref.attention[i][m].numpy(), atol=1e-5)
            np.testing.assert_array_equal(g.segment_frames, ref.segment_frames[i][m].numpy())
            np.testing.assert_allclose(g.segment_logits, seg[i][m].numpy(), atol=1e-5)


def test_onnx_identify_gives_the_torch_posteriors(exported):
    """The exported dir alone (no checkpoint) with onnxruntime == the checkpoint with torch."""
    torch_id = Identifier.from_pretrained(exported["exp"], chunk_seconds=2)
    onnx_id = Identifier.from_pretrained(exported["out"], backend="onnx", chunk_seconds=2)
    a = torch_id.identify(exported["wav"], timeline=True)
    b = onnx_id.identify(exported["wav"], timeline=True)
    assert a.chunks >= 2 and a.chunks == b.chunks
    np.testing.assert_allclose(list(b.posteriors.values()), list(a.posteriors.values()),
                               atol=1e-5)
    assert [(s.start, s.end) for s in a.segments] == \
        [(s.start, s.end) for s in b.segments]
    np.testing.assert_allclose([s.weight for s in b.segments],
                               [s.weight for s in a.segments], atol=1e-5)
    for ta, tb in zip(a.timeline, b.timeline, strict=True):
        np.testing.assert_allclose(list(tb.values()), list(ta.values()), atol=1e-5)


def test_torchscript_loads_and_matches(exported):
    module, meta = load_torchscript(exported["out"] / "model.ts")
    assert meta["langs"] == LANGS and meta["model_name"] == "hgru"
    model, _ = load_model(exported["exp"] / "final.pt")
    x, n = _random_batch([777, 401], seed=7)
    with torch.no_grad():
        logits, attention, mask, frames, seg = module(x, n)
        ref = model(x, n)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(attention, ref.attention, atol=1e-5, rtol=0)
    assert torch.equal(mask, ref.segment_mask) and torch.equal(frames, ref.segment_frames)
    torch.testing.assert_close(seg, model.segment_logits(x, n).detach(), atol=1e-5, rtol=0)


def test_export_of_a_missing_checkpoint_fails_cleanly(tmp_path, capsys):
    assert main(["export", "--model-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "final.pt" in err and "Traceback" not in err
    assert not list(Path(tmp_path).iterdir())


def test_exported_model_loads_and_runs_without_torch(exported):
    """With model.onnx from the same checkpoint, the model side of ``--backend onnx`` takes
    the languages and feature dimension from the file's metadata: no torch, no checkpoint
    loading (the checkpoint is only hashed)."""
    code = (
        "import sys\nimport numpy as np\nfrom lre.export import load_onnx_runner\n"
        f"r = load_onnx_runner({str(exported['exp'])!r})\n"
        "[out] = r.run([np.zeros((300, r.feat_dim), np.float32)])\n"
        "print(r.langs, r.feat_dim, out.logits.shape, 'torch' in sys.modules)\n")
    shutil.copy(exported["out"] / "model.onnx", exported["exp"] / "model.onnx")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
    finally:
        (exported["exp"] / "model.onnx").unlink()
    assert out.split() == ["['de',", "'en',", "'fr',", "'it']", "40", "(4,)", "False"]


def test_onnx_model_of_other_features_is_refused(exported, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(exported["out"], out)
    cfg = FeatureConfig.default("fbank80")
    (out / "feats_config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(LreError, match=f"model expects feat_dim=40 but .* gives {cfg.feat_dim}"):
        Identifier.from_pretrained(out, backend="onnx")
