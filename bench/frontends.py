"""Benchmark the Whisper-base front end against its peers on the embedded recipe's sets.

Subcommands (every figure printed with the number of utterances it rests on):

- ``probe``: the linear probe, a peer any encoder feature should beat: mean and standard
  deviation of each utterance's stored states (``feats.scp`` of a data dir), a logistic
  regression trained on a train set (``--train-share`` of it, 0.5 by default) and tested on
  each given set. ``--pad`` instead encodes ``--per-lang`` utterances per language of the
  train and dev sets twice, unpadded and padded to 30 s, and compares the probe on dev.
- ``layers``: which hidden layer of Whisper base to use: the mean and standard deviation
  of every hidden state (the input embedding, layers 1-6) of ``--per-lang`` clean training
  utterances per language and of their ``--copies`` in ``--train`` (the recipe's training
  copies), a logistic regression per layer (and per mean of layers), tested on each set.
- ``zeroshot``: Whisper-base's own language detection (faster-whisper ``detect_language``:
  a 30 s encoder pass and one decoder step per file), restricted to the model's languages,
  on ``--per-lang`` utterances per language of each set.
- ``loader``: training batches read from stored states and from states computed on read
  (``--storage none``: each crop's audio encoded when it is drawn) with 0, 1 and 2 loader
  workers, against the model's training step on the same batches: does the loader keep up?
- ``speed``: seconds per file of ``lre identify`` with a trained model dir (encoder states
  then the HGRU) and of ``detect_language`` on the same files and threads, and the ratio;
  and the feature stage's throughput (x real time) and peak memory for 10 s and 600 s files
  on 1 and 2 threads.

Usage:
    .venv/bin/python bench/frontends.py probe --train data_whisper_base/train \\
        data_whisper_base/{dev,test,test_noisy,test_reverb,test_tel,test_human}
    .venv/bin/python bench/frontends.py layers --clean data/train --train data/train_aug \
        data/{dev,dev_noisy,dev_reverb,dev_tel}
    .venv/bin/python bench/frontends.py zeroshot --langs-of exp/hgru_whisper_base data/test ...
    .venv/bin/python bench/frontends.py speed --model exp/hgru_whisper_base data/test
    .venv/bin/python bench/frontends.py loader --stored data_whisper_base/train \
        --on-read data_on_read/train --config recipes/synth/conf/hgru_whisper_base.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lre.data.tables import read_table


def _utts_by_lang(data: Path, per_lang: int | None, seed: int = 0) -> list[tuple[str, str]]:
    """(utt, lang) of a data dir, ``per_lang`` of each language drawn with ``seed``."""
    utt2lang = read_table(data / "utt2lang")
    rng = np.random.default_rng(seed)
    out = []
    for lang in sorted(set(utt2lang.values())):
        utts = sorted(u for u, v in utt2lang.items() if v == lang)
        if per_lang is not None and len(utts) > per_lang:
            utts = sorted(rng.choice(utts, per_lang, replace=False).tolist())
        out += [(u, lang) for u in utts]
    return out


def _pooled(feats: np.ndarray) -> np.ndarray:
    return np.concatenate([feats.mean(0), feats.std(0)])


def _stored_stats(data: Path, utts: list[str]) -> np.ndarray:
    import kaldiio

    scp = read_table(data / "feats.scp")
    return np.stack([_pooled(kaldiio.load_mat(scp[u])) for u in utts])


def _probe(train_x: np.ndarray, train_y: list[str]):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(
        train_x, train_y)


def cmd_probe(args: argparse.Namespace) -> None:
    if args.pad:
        return _probe_padding(args)
    train = _utts_by_lang(Path(args.train), None)
    rng = np.random.default_rng(0)
    keep = sorted(rng.choice(len(train), int(round(args.train_share * len(train))),
                             replace=False).tolist())
    train = [train[i] for i in keep]
    clf = _probe(_stored_stats(Path(args.train), [u for u, _ in train]), [v for _, v in train])
    print(f"linear probe (mean+std of the stored states), trained on {len(train)} utterances "
          f"of {args.train}")
    for d in map(Path, args.sets):
        utts = [(u, v) for u, v in _utts_by_lang(d, None) if v in clf.classes_]
        if not utts:
            continue
        pred = clf.predict(_stored_stats(d, [u for u, _ in utts]))
        acc = np.mean([p == v for p, (_, v) in zip(pred, utts, strict=True)])
        print(f"  {d.name:16s} {100 * acc:6.2f} %  ({len(utts)} utterances)")


def _probe_padding(args: argparse.Namespace) -> None:
    from lre.data.datadir import DataDir, load_utterance
    from lre.features.config import FeatureConfig
    from lre.features.pipeline import extract

    conf = FeatureConfig.from_files("features/whisper_base.conf")
    data = {"train": Path(args.train), "dev": Path(args.sets[0])}
    stats: dict[tuple[str, bool], np.ndarray] = {}
    labels = {}
    for name, d in data.items():
        dd = DataDir.load(d)
        utts = _utts_by_lang(d, args.per_lang)
        labels[name] = [v for _, v in utts]
        waves = [load_utterance(dd, u, 16000) for u, _ in utts]
        for pad in (False, True):
            cfg = dataclasses.replace(conf, encoder=dataclasses.replace(conf.encoder,
                                                                        pad_to_window=pad))
            t = time.process_time()
            stats[name, pad] = np.stack([_pooled(extract(w, cfg)[0]) for w in waves])
            secs = sum(len(w) for w in waves) / 16000
            print(f"  {name} pad={pad}: {len(waves)} utterances, {secs:.0f} s of audio, "
                  f"{time.process_time() - t:.1f} s CPU", flush=True)
    for pad in (False, True):
        clf = _probe(stats["train", pad], labels["train"])
        acc = np.mean(clf.predict(stats["dev", pad]) == np.array(labels["dev"]))
        print(f"probe on {data['dev']} ({len(labels['dev'])} utterances), trained on "
              f"{len(labels['train'])}: {'padded to 30 s' if pad else 'unpadded'} "
              f"{100 * acc:.2f} %")


_LAYER_SETS = [(i,) for i in range(7)] + [(3, 4), (4, 5), (3, 4, 5), (4, 5, 6), (2, 3, 4, 5, 6)]


def _layer_stats(data: Path, utts: list[str], threads: int) -> np.ndarray:
    """``(utts, 7, 2 * dim)``: mean and std of each hidden state of each utterance."""
    from lre.data.datadir import DataDir, load_utterance
    from lre.features.encoders import EncoderOptions
    from lre.features.encoders.whisper_layers import WhisperLayersEncoder

    enc = WhisperLayersEncoder(EncoderOptions(layer="6", threads=threads))
    dd = DataDir.load(data)
    out = []
    for u in utts:
        wave = load_utterance(dd, u, 16000)
        out.append(np.stack([_pooled(h.numpy()) for h in enc.hidden_states(wave)]))
    return np.stack(out)


def cmd_layers(args: argparse.Namespace) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # The first --per-lang of each language in a seeded shuffle of the clean set's ids.
    utt2lang = read_table(Path(args.clean) / "utt2lang")
    order = sorted(utt2lang)
    random.Random(0).shuffle(order)
    taken: dict[str, int] = {}
    clean = []
    for u in order:
        if taken.setdefault(utt2lang[u], 0) < args.per_lang:
            taken[utt2lang[u]] += 1
            clean.append((u, utt2lang[u]))
    clean.sort()
    copies = read_table(Path(args.train) / "utt2lang")
    train = [(f"{k}-{u}", v) for k in args.copies.split(",") for u, v in clean
             if f"{k}-{u}" in copies]
    x = np.concatenate([_layer_stats(Path(args.clean), [u for u, _ in clean], args.threads),
                        _layer_stats(Path(args.train), [u for u, _ in train], args.threads)])
    y = [v for _, v in clean + train]
    tests = {}
    for d in map(Path, args.sets):
        utts = _utts_by_lang(d, None)
        tests[d.name] = (_layer_stats(d, [u for u, _ in utts], args.threads),
                         np.array([v for _, v in utts]))
    print(f"linear probe per hidden state, trained on {len(y)} utterances "
          f"({len(clean)} of {args.clean} and their copies); accuracy %, utterances: "
          + ", ".join(f"{k} {len(v[1])}" for k, v in tests.items()))
    print("layers\t" + "\t".join(tests) + "\tmean")
    for layers in _LAYER_SETS:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        clf.fit(x[:, list(layers)].mean(1), y)
        accs = [100 * np.mean(clf.predict(tx[:, list(layers)].mean(1)) == ty)
                for tx, ty in tests.values()]
        print("-".join(map(str, layers)) + "\t" + "\t".join(f"{a:.2f}" for a in accs)
              + f"\t{np.mean(accs):.2f}", flush=True)


def _whisper(threads: int):
    from lre.features.encoders import EncoderOptions
    from lre.features.encoders.whisper import WhisperEncoder

    return WhisperEncoder(EncoderOptions(threads=threads))


def cmd_zeroshot(args: argparse.Namespace) -> None:
    from lre.data.datadir import DataDir, load_utterance

    langs = read_table(Path(args.langs_of) / "lang2id") if args.langs_of else None
    enc = _whisper(args.threads)
    print(f"Whisper-base detect_language, restricted to {len(langs) if langs else 'all'} "
          f"languages, {args.per_lang} utterances per language, {args.threads} thread(s)")
    for d in map(Path, args.sets):
        dd = DataDir.load(d)
        utts = [(u, v) for u, v in _utts_by_lang(d, args.per_lang)
                if langs is None or v in langs]
        right, t0 = 0, time.time()
        for u, lang in utts:
            probs = enc.detect_language(load_utterance(dd, u, 16000),
                                        list(langs) if langs else None)
            right += probs[0][0] == lang
        print(f"  {d.name:16s} {100 * right / len(utts):6.2f} %  ({len(utts)} utterances, "
              f"{(time.time() - t0) / len(utts):.2f} s a file)", flush=True)


def cmd_speed(args: argparse.Namespace) -> None:
    import torch

    from lre.data.datadir import DataDir
    from lre.identify import Identifier

    torch.set_num_threads(args.threads)
    d = Path(args.sets[0])
    dd = DataDir.load(d)
    files = [dd.wav_scp[u] for u, _ in _utts_by_lang(d, args.per_lang)]
    ident = Identifier.from_pretrained(args.model)
    ident.identify(files[0])  # loads the encoder
    t0 = time.time()
    for f in files:
        ident.identify(f)
    ours = (time.time() - t0) / len(files)
    enc = _whisper(args.threads)
    from lre.data.audio import load_audio

    t0 = time.time()
    for f in files:
        enc.detect_language(load_audio(f, 16000))
    theirs = (time.time() - t0) / len(files)
    print(f"{len(files)} files of {d}, {args.threads} thread(s): lre identify {ours:.3f} s a "
          f"file, Whisper detect_language {theirs:.3f} s a file: {theirs / ours:.1f}x faster")
    for threads in (1, 2):
        for seconds in (10, 600):
            out = subprocess.run([sys.executable, __file__, "_throughput", str(seconds),
                                  str(threads)], capture_output=True, text=True, check=True)
            print(out.stdout.strip(), flush=True)


def _throughput(seconds: int, threads: int) -> None:
    """Features of one ``seconds`` long recording in a fresh process: x real time, peak RSS."""

    from lre.features.config import FeatureConfig
    from lre.features.pipeline import extract
    from lre.utils import limit_threads

    limit_threads(threads)
    cfg = FeatureConfig.from_files("features/whisper_base.conf")
    rng = np.random.default_rng(0)
    t = np.arange(seconds * 16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * np.sin(t)))
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    extract(wave[:16000], cfg)  # model loading is not throughput
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.time()
    feats, _ = extract(wave, cfg)
    wall = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  features of a {seconds:4d} s file, {threads} thread(s): {seconds / wall:6.1f}x real "
          f"time, peak RSS {peak:.0f} MB ({peak - base:+.0f} MB over the loaded model), "
          f"{feats.shape[0]} states")


def _loader_seconds(data: Path, lang2id: dict[str, int], geometry, config, batches: int
                    ) -> tuple[float, int, list]:
    """Seconds for training batches 2 to ``batches + 1`` of ``data`` (the first, which pays
    for starting the workers and loading the encoder in each, is left out), the crop
    frames they hold, and the batches."""
    from lre.dataset import make_train_loader

    loader, sampler = make_train_loader(data, lang2id, geometry, config, seed=0)
    sampler.set_epoch(0)
    got, frames, t0 = [], 0, 0.0
    for batch in loader:
        if not t0:
            t0 = time.time()
            continue
        got.append(batch)
        frames += int(batch.lengths.sum())
        if len(got) == batches:
            break
    return time.time() - t0, frames, got


def cmd_loader(args: argparse.Namespace) -> None:
    """Training batches from stored states and from states computed on read (the same
    utterances, ``--workers`` loader processes), against the model's training step."""
    import dataclasses

    import torch
    import yaml

    from lre.dataset import LoaderConfig
    from lre.features.reader import FeatureReader
    from lre.models import build_model, frame_rate_config
    from lre.utils import limit_threads

    limit_threads(1)
    cfg = yaml.safe_load(Path(args.config).read_text())
    reader = FeatureReader(args.stored)
    langs = sorted(set(read_table(Path(args.stored) / "utt2lang").values()))
    lang2id = {lang: i for i, lang in enumerate(langs)}
    model_cfg = {k: v for k, v in cfg["model"].items() if k != "name"}
    net = build_model(cfg["model"]["name"], reader.feat_dim, len(langs),
                      frame_rate_config(cfg["model"]["name"], model_cfg, reader.frame_shift))
    geometry = net.geometry(reader.frame_shift)
    config = LoaderConfig.from_dict({**cfg.get("data", {}), "cache": "none"})
    secs, frames, batches = _loader_seconds(Path(args.stored), lang2id, geometry, config,
                                            args.batches)
    speech = frames * reader.frame_shift
    print(f"stored states, 0 workers: {secs / len(batches):.3f} s a batch "
          f"({speech / secs:.0f}x real time of speech; {len(batches)} batches of "
          f"{config.batch_size})")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.time()
    for batch in batches:
        loss = torch.nn.functional.cross_entropy(net(batch.feats, batch.lengths).logits,
                                                 batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    step = (time.time() - t0) / len(batches)
    print(f"training step (1 thread): {step:.3f} s a batch")
    for workers in (int(w) for w in args.workers.split(",")):
        config = dataclasses.replace(config, num_workers=workers)
        secs, frames, batches = _loader_seconds(Path(args.on_read), lang2id, geometry, config,
                                                args.batches)
        per = secs / len(batches)
        print(f"states computed on read, {workers} worker(s): {per:.3f} s a batch "
              f"({frames * reader.frame_shift / secs:.0f}x real time of speech): "
              f"{per / step:.1f}x the training step")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_throughput":
        return _throughput(int(sys.argv[2]), int(sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("probe")
    a.add_argument("--train", required=True)
    a.add_argument("--train-share", type=float, default=0.5)
    a.add_argument("--pad", action="store_true")
    a.add_argument("--per-lang", type=int, default=10)
    a.add_argument("sets", nargs="+")
    a = sub.add_parser("layers")
    a.add_argument("--clean", required=True, help="the clean training set")
    a.add_argument("--train", required=True, help="the training copies (ids kind-utt)")
    a.add_argument("--copies", default="noise,reverb,tel")
    a.add_argument("--per-lang", type=int, default=80)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("sets", nargs="+")
    a = sub.add_parser("zeroshot")
    a.add_argument("--langs-of", default=None, help="a model dir: its lang2id")
    a.add_argument("--per-lang", type=int, default=10)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("sets", nargs="+")
    a = sub.add_parser("speed")
    a.add_argument("--model", required=True)
    a.add_argument("--per-lang", type=int, default=2)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("sets", nargs=1)
    a = sub.add_parser("loader")
    a.add_argument("--stored", required=True, help="a data dir with stored states")
    a.add_argument("--on-read", required=True, help="the same utterances, --storage none")
    a.add_argument("--config", required=True, help="a training config (its model and data)")
    a.add_argument("--batches", type=int, default=20)
    a.add_argument("--workers", default="0,1,2")
    args = p.parse_args()
    {"probe": cmd_probe, "layers": cmd_layers, "zeroshot": cmd_zeroshot, "speed": cmd_speed,
     "loader": cmd_loader}[args.cmd](args)


if __name__ == "__main__":
    main()
