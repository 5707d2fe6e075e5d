"""The one config mechanism: typed sections, coercion, unknown keys with did-you-mean."""

from __future__ import annotations

import pytest

from lre.config import Section, coerce, merge, parse_overrides
from lre.dataset import LoaderConfig
from lre.models import build_model
from lre.training.config import SECTIONS, TrainingConfig, resolve_config
from lre.utils import LreError


def test_loader_config_rejects_an_unknown_key_with_did_you_mean():
    with pytest.raises(LreError, match=r"unknown key 'data.bach_size' "
                                       r"\(did you mean 'data.batch_size'\?\)") as err:
        LoaderConfig.from_dict({"bach_size": 3})
    assert "\n" not in str(err.value)
    config = LoaderConfig.from_dict({"batch_size": "3", "cache_max_gb": 1})
    assert config.batch_size == 3 and config.cache_max_gb == 1.0
    assert isinstance(config.cache_max_gb, float)
    with pytest.raises(LreError, match=r"data.batch_size = 'many' is not an integer"):
        LoaderConfig.from_dict({"batch_size": "many"})


@pytest.mark.parametrize("name", list(SECTIONS))
def test_every_training_section_rejects_unknown_keys(name):
    section = SECTIONS[name]
    assert issubclass(section, Section) and section.NAME == name
    with pytest.raises(LreError, match=rf"unknown key '{name}.no_such_key'"):
        section.from_dict({"no_such_key": 1})
    assert section.from_dict(section().to_dict()) == section()


def _cli_error(capsys, *args: str) -> str:
    from lre.cli import main

    rc = main(["train", *args])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("lre train: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_unknown_model_key_is_one_line_with_did_you_mean(tmp_path, capsys):
    line = _cli_error(capsys, "--train", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                      "--set", "model.hiden1=64")
    assert line.startswith("lre train: error: --set: unknown key 'model.hiden1' "
                           "(did you mean 'model.hidden1'?); known: name, ")


def test_cli_unknown_key_in_a_yaml_file_names_the_file(tmp_path, capsys):
    path = tmp_path / "conf.yaml"
    path.write_text("data: {bach_size: 3}\n")
    line = _cli_error(capsys, "--train", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                      "--config", str(path))
    assert line.startswith(f"lre train: error: {path}: unknown key 'data.bach_size' "
                           "(did you mean 'data.batch_size'?); known: batch_size, ")


def test_torchrun_entry_point_reports_the_same_line(tmp_path, capsys):
    from lre.train import main

    rc = main(["--train", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
               "--set", "train.epochs=abc"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "lre train: error: --set: train.epochs = 'abc' is not an integer" in err


@pytest.mark.parametrize("setting, message", [
    ("train.epochs=abc", r"--set: train.epochs = 'abc' is not an integer"),
    ("train.epochs=2.5", r"--set: train.epochs = 2.5 is not an integer"),
    ("train.progress=maybe", r"--set: train.progress = 'maybe' is not true or false"),
    ("optim.lr=fast", r"--set: optim.lr = 'fast' is not a number"),
    ("model.hidden1=[1, 2]", r"--set: model.hidden1 = \[1, 2\] is not an integer"),
    ("modle.hidden1=3", r"--set: unknown key 'modle' \(did you mean 'model'\?\)"),
    ("data=3", r"--set: data: expected a mapping"),
])
def test_wrong_values_name_the_key(setting, message):
    with pytest.raises(LreError, match=message):
        resolve_config("hgru", None, [setting])


def test_models_and_training_coerce_alike(tmp_path):
    # "1e-1" is a string to YAML; both paths read it as the number it spells.
    assert build_model("hgru", 40, 3, {"dropout": "1e-1"}).config["dropout"] == 0.1
    assert resolve_config("hgru", None, ["model.dropout=1e-1"])["model"]["dropout"] == 0.1
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\ntrain:\n  epochs: 4.0\n  progress: no\n")
    cfg = resolve_config("hgru", path)
    assert cfg["optim"]["lr"] == 0.001 and cfg["train"]["epochs"] == 4
    assert type(cfg["train"]["epochs"]) is int and cfg["train"]["progress"] is False
    with pytest.raises(LreError, match=r"hgru config: unknown key 'hiden1' "
                                       r"\(did you mean 'hidden1'\?\)"):
        build_model("hgru", 40, 3, {"hiden1": 64})
    with pytest.raises(LreError, match=r"hgru config: hidden1 = True is not an integer"):
        build_model("hgru", 40, 3, {"hidden1": True})


def test_coerce_rules():
    assert coerce("24", 1, "k", "src") == 24
    assert coerce(3.0, 1, "k", "src") == 3 and type(coerce(3.0, 1, "k", "src")) is int
    assert coerce(2, 0.5, "k", "src") == 2.0 and type(coerce(2, 0.5, "k", "src")) is float
    assert coerce("yes", False, "k", "src") is True
    assert coerce(["3", 4.0], [1], "k", "src") == [3, 4]
    assert coerce(12, "name", "k", "src") == "12"
    for value, default, message in [
        (True, 1, "src: k = True is not an integer"),
        (1, False, "src: k = 1 is not true or false"),
        ([], [1], r"src: k = \[\] is not a non-empty list"),
        (["x"], [1], r"src: k\[0\] = 'x' is not an integer"),
        (None, "name", "src: k = None is not a string"),
    ]:
        with pytest.raises(LreError, match=message):
            coerce(value, default, "k", "src")


def test_merge_is_nested_and_checks_every_level():
    base = {"a": {"b": 1, "c": {"depth": 0.5}}}
    merge(base, parse_overrides(["a.b=2", "a.c.depth=1"]), "--set")
    assert base == {"a": {"b": 2, "c": {"depth": 1.0}}}
    with pytest.raises(LreError, match=r"--set: unknown key 'a.c.dapth' "
                                       r"\(did you mean 'a.c.depth'\?\); known: depth$"):
        merge(base, {"a": {"c": {"dapth": 1}}}, "--set")


def test_typed_view_of_a_resolved_config():
    cfg = resolve_config("hgru", None, ["optim.lr=0.01", "data.batch_size=7",
                                        "augment.time_masks=2"])
    typed = TrainingConfig.from_dict(cfg)
    assert typed.optim.lr == 0.01 and typed.data.batch_size == 7 and typed.augment.active
    assert typed.model_name == "hgru" and "name" not in typed.model_sizes
    assert typed.train.first_averaged_epoch == typed.train.epochs + 1


def test_augment_settings_are_checked_too():
    import torch

    from lre.training.spec_augment import augment_features

    x = torch.zeros(1, 10, 4)
    with pytest.raises(LreError, match=r"unknown key 'augment.freq_mask' "
                                       r"\(did you mean 'augment.freq_masks'\?\)"):
        augment_features(x, torch.tensor([10]), {"freq_mask": 1})


def test_feature_config_goes_through_the_same_checks(tmp_path, capsys):
    """A model dir whose feats_config.json has a misspelt option: score and identify both
    stop with the one-line did-you-mean of every other config."""
    import json

    import numpy as np
    import soundfile as sf

    from lre.cli import main
    from lre.features import FeatureConfig

    cfg = FeatureConfig().to_dict()
    with pytest.raises(LreError, match=r"unknown key 'vad.vad_energy_treshold' \(did you "
                                       r"mean 'vad.vad_energy_threshold'\?\)"):
        FeatureConfig.from_dict({**cfg, "vad": {"vad_energy_treshold": 4.0}})
    with pytest.raises(LreError, match=r"unknown key 'kidn' \(did you mean 'kind'\?\)"):
        FeatureConfig.from_dict({**cfg, "kidn": "fbank"})
    assert FeatureConfig.from_dict({**cfg, "vad": {"vad_energy_threshold": "4"}}).vad \
        .vad_energy_threshold == 4.0

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "final.pt").write_bytes(b"")
    (exp / "feats_config.json").write_text(json.dumps({**cfg, "cmvn": {"norm_var": True}}))
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    for args in (["identify", "--model", str(exp), str(wav)],
                 ["score", "--model-dir", str(exp), "--data", str(tmp_path), "--out",
                  str(tmp_path / "out")]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "unknown key 'cmvn.norm_var' (did you mean 'cmvn.norm_vars'?)" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    log = tmp_path / "log" / "identify.log"
    assert main(["--log-file", str(log), "identify", "--model", str(exp), str(wav)]) == 1
    assert "did you mean 'cmvn.norm_vars'?" in log.read_text()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
