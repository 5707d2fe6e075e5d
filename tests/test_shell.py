"""The shell side: tools/parse_options.sh and the scripts that use it (run.sh,
features/make_feats.sh, recipes/*/prepare.sh), and the recipes' conf.sh files."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARSER = ROOT / "tools" / "parse_options.sh"
RECIPES = sorted(p.parent.name for p in (ROOT / "recipes").glob("*/prepare.sh"))

TINY_SCRIPT = f"""#!/usr/bin/env bash
# A tiny script: prints its options.
#
# Usage: tiny.sh [options] <arg>...
set -euo pipefail
nj=4
data_dir=data
train_opts=
force=false
. "{PARSER}"
for v in nj data_dir train_opts force; do echo "$v=${{!v}}"; done
echo "args=$*"
echo "leaked=$(compgen -v _po_ || true)"
"""


def bash(*args: str | Path, env: dict[str, str] | None = None,
         cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.fixture
def tiny(tmp_path: Path):
    script = tmp_path / "tiny.sh"
    script.write_text(TINY_SCRIPT)
    return lambda *args: bash(script, *args)


def parsed(proc: subprocess.CompletedProcess) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


# ---------------------------------------------------------------- tools/parse_options.sh
def test_both_option_forms_and_dashes(tiny) -> None:
    values = parsed(tiny("--nj", "8", "--data-dir=/some/where", "pos1", "pos2"))
    assert values["nj"] == "8"
    assert values["data_dir"] == "/some/where"
    assert values["args"] == "pos1 pos2"
    assert values["leaked"] == ""


def test_value_is_taken_verbatim(tiny) -> None:
    # a value that starts with -- (options passed on to another program) or holds =
    values = parsed(tiny("--train-opts", "--set epochs=5", "--data-dir=a=b", "--nj="))
    assert values["train_opts"] == "--set epochs=5"
    assert values["data_dir"] == "a=b"
    assert values["nj"] == ""


def test_options_end_at_first_positional_or_double_dash(tiny) -> None:
    assert parsed(tiny("pos", "--nj", "3"))["args"] == "pos --nj 3"
    values = parsed(tiny("--nj", "3", "--", "--data-dir"))
    assert values["nj"] == "3" and values["args"] == "--data-dir"


@pytest.mark.parametrize("option", ["--xyz", "--xyz=1", "--PATH", "--home", "--_po_name"])
def test_unknown_option_exits_2(tiny, option: str) -> None:
    proc = tiny(option, "1")
    assert proc.returncode == 2
    assert f"unknown option {option.split('=')[0]}" in proc.stderr
    assert proc.stdout == ""


def test_missing_value(tiny) -> None:
    proc = tiny("--nj")
    assert proc.returncode == 2
    assert "option --nj needs a value" in proc.stderr


def test_booleans(tiny) -> None:
    assert parsed(tiny("--force"))["force"] == "true"
    values = parsed(tiny("--force", "data/train"))
    assert values["force"] == "true" and values["args"] == "data/train"
    assert parsed(tiny("--force", "false", "x"))["force"] == "false"
    assert parsed(tiny("--force", "--force=false"))["force"] == "false"
    proc = tiny("--force=yes")
    assert proc.returncode == 2 and "--force is true or false, not 'yes'" in proc.stderr


def test_help_prints_the_usage_header(tiny, tmp_path: Path) -> None:
    proc = tiny("--nj", "3", "--help", "--xyz")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "A tiny script: prints its options.", "", "Usage: tiny.sh [options] <arg>..."]
    assert parsed(tiny("-x"))["args"] == "-x"  # single dash: not an option
    # a script's own usage function wins over its comment block
    script = tmp_path / "own.sh"
    script.write_text(f'# header\nusage() {{ echo "own usage"; }}\n. "{PARSER}"\necho ran\n')
    proc = bash(script, "-h")
    assert proc.returncode == 0 and proc.stdout == "own usage\n"


# ---------------------------------------------------------------- the scripts
def test_run_sh_help_and_errors(tmp_path: Path) -> None:
    proc = bash(ROOT / "run.sh", "--help")
    assert proc.returncode == 0 and "--stop-stage N" in proc.stdout
    for args, message in [
        (["extra"], "unexpected argument extra"),
        (["--stage"], "option --stage needs a value"),
        (["--stage", "x"], "--stage must be a number"),
        (["--root", "/"], "unknown option --root"),
        (["--config", str(tmp_path / "none.yaml")], "none.yaml: no such file"),
    ]:
        proc = bash(ROOT / "run.sh", *args)
        assert proc.returncode == 2, args
        assert message in proc.stderr, (args, proc.stderr)


def test_make_feats_rejects_unknown_option(tmp_path: Path) -> None:
    proc = bash(ROOT / "features" / "make_feats.sh", "--no-such-option", "1", tmp_path)
    assert proc.returncode == 2
    assert "unknown option --no-such-option" in proc.stderr
    proc = bash(ROOT / "features" / "make_feats.sh", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("Feature stage for one data dir")


def fake_lre(tmp_path: Path) -> Path:
    """A venv-like folder whose bin/lre prints its arguments, one per line."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    lre = bin_dir / "lre"
    lre.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    lre.chmod(0o755)
    return bin_dir.parent


def test_make_feats_passes_its_options_on(tmp_path: Path) -> None:
    venv = fake_lre(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("u1 a.wav\n")
    mfcc = ROOT / "features" / "mfcc.conf"
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    proc = bash(ROOT / "features" / "make_feats.sh", "--nj=3", "--feat-conf", mfcc, "--force",
                data, tmp_path / "exp", env=env)
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    assert argv[:4] == ["features", str(data), str(tmp_path / "exp"), str(data / "data")]
    assert argv[argv.index("--feat-conf") + 1] == str(mfcc)
    assert argv[argv.index("--vad-conf") + 1] == str(ROOT / "features" / "vad.conf")
    assert argv[argv.index("--nj") + 1] == "3"
    assert argv[-1] == "--force"


@pytest.mark.parametrize("recipe", RECIPES)
def test_prepare_rejects_unknown_option(recipe: str, tmp_path: Path) -> None:
    proc = bash(ROOT / "recipes" / recipe / "prepare.sh", "--no-such-option", "1", tmp_path)
    assert proc.returncode == 2
    assert "unknown option --no-such-option" in proc.stderr
    proc = bash(ROOT / "recipes" / recipe / "prepare.sh", "--help")
    assert proc.returncode == 0 and "Usage: recipes/" in proc.stdout


def test_prepare_passes_set_options_on(tmp_path: Path) -> None:
    env = dict(os.environ, LRE_VENV=str(fake_lre(tmp_path)))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = bash(ROOT / "recipes" / "kaldi" / "prepare.sh", "--nj", "2", "--seed", "1",
                f"--corpus={corpus}", "--name", "train", "--lang-from", "spk-prefix",
                "--no-probe", tmp_path / "out", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "prepare", "kaldi", str(corpus), str(tmp_path / "out"), "--nj", "2",
        "--lang-from", "spk-prefix", "--name", "train", "--no-probe"]  # --seed: ignored
    proc = bash(ROOT / "recipes" / "kaldi" / "prepare.sh", "--corpus", corpus, "a", "b", env=env)
    assert proc.returncode == 2 and "more than one data root: a b" in proc.stderr
    proc = bash(ROOT / "recipes" / "synth" / "prepare.sh", "--corpus", corpus, "a", env=env)
    assert proc.returncode == 2 and "takes no --corpus" in proc.stderr


# ---------------------------------------------------------------- recipe settings
def test_conf_sh_holds_only_what_differs_from_run_sh() -> None:
    assignment = re.compile(r"^([a-z_][a-z0-9_]*)=(.*?)\s*(#.*)?$", re.M)
    run_sh = (ROOT / "run.sh").read_text()
    defaults: dict[str, str] = {}
    for m in assignment.finditer(run_sh):
        defaults.setdefault(m[1], m[2])  # the first assignment is the default
    assert defaults["train_set"] == "train" and defaults["feat_conf"] == "features/fbank.conf"
    for conf in sorted((ROOT / "recipes").glob("*/conf.sh")):
        for m in assignment.finditer(conf.read_text()):
            name, value = m[1], m[2]
            assert defaults.get(name) != value, f"{conf}: {name}={value} is run.sh's default"


@pytest.mark.parametrize("front_end, speed", [("fbank", True), ("whisper-base", False)])
def test_synth_conf_sh_adds_speed_copies_for_fbank_only(front_end: str, speed: bool) -> None:
    """The fbank recipe trains on speed-perturbed copies too, its noise copies at 0-15 dB; the
    Whisper-base variant keeps the copies it was measured on. Sourced under set -e as run.sh
    does: it must return 0."""
    script = (f"set -euo pipefail; front_end={front_end}; . recipes/synth/conf.sh; "
              'printf "%s\\n" "$train_augment_opts"')
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    opts = proc.stdout.strip()
    assert opts.startswith("--speed 0.9,1.1 ") == speed, opts
    assert "--noise babble,pink,white" in opts and "--telephone" in opts
    assert ("--snr 0:15" if speed else "--snr 0:20") in opts.split(" --reverb")[0], opts


def test_run_sh_names_the_model_config(tmp_path: Path) -> None:
    """Stage 2 says which training config it uses: the recipe's, else the built-in defaults
    with their size (then fails here: the data dir has no features)."""
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    (train / "feats_config.json").write_text('{"feat_dim": 40}')
    (train / "utt2lang").write_text("a en\nb fi\nc ru\nd fi\n")
    env = dict(os.environ, LRE_SKIP_APT="1")
    common = ["--stage", "2", "--stop-stage", "2", "--nproc", "1",
              "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp")]
    proc = bash(ROOT / "run.sh", "--recipe", "fleurs", *common, env=env)
    assert proc.returncode != 0
    assert re.search(r"with the built-in hgru defaults \(\d\.\d\d M parameters for 40-dim "
                     r"features, 3 languages\): there is no recipes/fleurs/conf/hgru\.yaml",
                     proc.stderr), proc.stderr
    proc = bash(ROOT / "run.sh", "--recipe", "synth", *common, env=env)
    assert proc.returncode != 0
    assert "with recipes/synth/conf/hgru.yaml\n" in proc.stderr, proc.stderr
