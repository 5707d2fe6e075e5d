"""Benchmark ``Identifier.identify``: real-time factor and peak memory on one CPU thread.

For each model size (the default HGRU, and the size the embedded recipe trains from
``recipes/synth/conf/hgru.yaml``, or a 128-unit HGRU when that file is absent) and each
file length (default 10 s, 60 s = one whole chunk, and 600 s of espeak-ng speech with
pauses, 16 kHz WAV), it prints:

- the real-time factor of ``identify(path)`` (audio decoding, features, VAD, CMVN, the
  model and chunk combination included), for the torch and onnxruntime backends;
- the real-time factor of the bare model forward on the same features, and the share of
  the whole that is the model;
- peak memory of a fresh process that loads the model and identifies the file once:
  peak RSS (VmHWM), its growth over the RSS after loading, and the peak of
  Python/numpy allocations during ``identify`` (``tracemalloc``), with the ratios of the
  longest file to the others.

Untrained weights: the cost does not depend on the weight values. Usage:

    .venv/bin/python bench/identify.py [--durations 10,60,600] [--backends torch,onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SENTENCES = {
    "en": "The quick brown fox jumps over the lazy dog while the children watch from the "
          "garden and talk about the weather.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund, während die Kinder im "
          "Garten über das Wetter sprechen.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux pendant que les enfants "
          "parlent du temps dans le jardin.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso mientras los niños hablan del "
          "tiempo en el jardín.",
}
NUM_LANGS = 14
RECIPE_CONF = REPO / "recipes" / "synth" / "conf" / "hgru.yaml"
SMALL = {"hidden1": 128, "hidden2": 128, "hidden3": 128, "attention": 64, "dense": 256}


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only settable before the first parallel work
        pass


def make_speech(path: Path, seconds: float, sr: int = 16000) -> Path:
    """``seconds`` of espeak-ng speech in several languages with 0.3-1.5 s pauses."""
    rng = np.random.default_rng(0)
    pieces = []
    with tempfile.TemporaryDirectory() as tmp:
        for lang, text in SENTENCES.items():
            wav = Path(tmp) / f"{lang}.wav"
            subprocess.run(["espeak-ng", "-v", lang, "-w", str(wav), text], check=True,
                           capture_output=True)
            x, rate = sf.read(wav, dtype="float32")
            from lre.data.audio import resample

            pieces.append(resample(x, rate, sr))
    out, total, i = [], 0, 0
    need = int(seconds * sr)
    while total < need:
        p = pieces[i % len(pieces)]
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * sr), dtype=np.float32)
        out += [p, gap]
        total += len(p) + len(gap)
        i += 1
    audio = np.concatenate(out)[:need]
    sf.write(path, audio, sr, subtype="PCM_16")
    return path


def recipe_model_config() -> dict | None:
    """The HGRU sizes of the embedded recipe (``model:`` of recipes/synth/conf/hgru.yaml)."""
    import yaml

    from lre.models import default_config

    if not RECIPE_CONF.is_file():
        return None
    model = (yaml.safe_load(RECIPE_CONF.read_text()) or {}).get("model") or {}
    known = default_config("hgru")
    return {k: v for k, v in model.items() if k in known}


def make_exp(exp: Path, config: dict | None) -> Path:
    """An experiment dir as ``lre train`` writes it, with untrained weights."""
    from lre.features import FeatureConfig
    from lre.models import build_model, save_model

    feats = REPO / "features"
    if (feats / "fbank.conf").is_file():
        cfg = FeatureConfig.from_files(
            feats / "fbank.conf",
            feats / "vad.conf" if (feats / "vad.conf").is_file() else None,
            feats / "cmvn.conf" if (feats / "cmvn.conf").is_file() else None,
        )
    else:
        cfg = FeatureConfig()
    langs = [f"l{i:02d}" for i in range(NUM_LANGS)]
    model = build_model("hgru", cfg.feat_dim, len(langs), config)
    exp.mkdir(parents=True, exist_ok=True)
    save_model(exp / "final.pt", model, langs)
    (exp / "feats_config.json").write_text(json.dumps(cfg.to_dict()))
    (exp / "lang2id").write_text("".join(f"{lang} {i}\n" for i, lang in enumerate(langs)))
    return exp


def child(exp: str, audio: str, backend: str) -> None:
    """Load the model, identify ``audio`` once, print peak memory as JSON."""
    import tracemalloc

    _threads(1)
    from lre.identify import Identifier

    ident = Identifier.from_pretrained(exp, backend=backend, num_threads=1)
    base = _rss_now_kb()
    tracemalloc.start()
    ident.identify(audio)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"base_kb": base, "peak_kb": _status_kb("VmHWM"),
                      "py_peak_kb": py_peak / 1024}))


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc (VmRSS now, VmHWM peak) in KiB.

    (``getrusage``'s ``ru_maxrss`` will not do: Linux carries it over ``exec`` from the
    forking parent, so a child would report the benchmark's own peak.)
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _rss_now_kb() -> int:
    return _status_kb("VmRSS")


def measure_memory(exp: Path, audio: Path, backend: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(exp), str(audio), backend],
        check=True, capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_time(fn, repeats: int) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of the best of ``repeats`` runs of ``fn()`` after a warm-up.

    The process runs one thread, so its CPU time is the work done whatever else the machine
    runs; the wall time is what a user waits on an idle core.
    """
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    return best


def time_identify(ident, audio: Path, repeats: int) -> tuple[float, float]:
    return best_time(lambda: ident.identify(str(audio)), repeats)


def time_model(ident, audio: Path, repeats: int) -> tuple[float, float]:
    """Seconds of the bare model forward on the chunks that ``identify`` would feed it."""
    from lre.inference.chunks import chunk_bounds, max_chunk_frames

    cfg = ident.feats_config
    stream = ident._open(str(audio), None, chunked=True)
    try:
        item = ident.model_input(stream)
    finally:
        stream.close()
    x = np.asarray(item.feats, dtype=np.float32)
    bounds = chunk_bounds(len(x), max_chunk_frames(ident.chunk_seconds, cfg.frame_shift))
    inputs = [x[s:e] for s, e in bounds]

    def forward() -> None:
        for x in inputs:
            ident.runner.run([x])

    return best_time(forward, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", default="10,60,600", help="file lengths in seconds")
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (best is kept); "
                    "files over 60 s get 2")
    ap.add_argument("--child", nargs=3, metavar=("EXP", "AUDIO", "BACKEND"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if shutil.which("espeak-ng") is None:
        sys.exit("bench/identify.py: espeak-ng is needed to make the test speech")
    _threads(1)
    import torch

    from lre.identify import Identifier
    from lre.models import default_config

    durations = [float(d) for d in args.durations.split(",")]
    backends = args.backends.split(",")
    sizes: dict[str, dict | None] = {"default": None}
    recipe = recipe_model_config()
    if recipe is not None:
        sizes["recipe"] = recipe
    else:  # no recipe config (yet): a smaller model stands in, named as such
        print(f"({RECIPE_CONF.relative_to(REPO)} not found: benchmarking a 'small' HGRU instead)")
        sizes["small"] = SMALL
    tmp = Path(tempfile.mkdtemp(prefix="lre-bench-identify-"))
    try:
        files = {d: make_speech(tmp / f"speech_{int(d)}s.wav", d) for d in durations}
        print(f"torch {torch.__version__}, 1 thread; files: "
              + ", ".join(f"{int(d)} s" for d in durations) + " of 16 kHz WAV speech")
        for size, config in sizes.items():
            exp = make_exp(tmp / f"exp_{size}", config)
            full = {**default_config("hgru"), **(config or {})}
            n_params = None
            for backend in backends:
                ident = Identifier.from_pretrained(exp, backend=backend, num_threads=1)
                if n_params is None and backend == "torch":
                    n_params = sum(p.numel() for p in ident.runner.model.parameters())
                    print(f"\nmodel '{size}': {n_params / 1e6:.2f} M parameters, config "
                          f"{json.dumps(full, sort_keys=True)}")
                print(f"  backend {backend}:")
                print(f"    {'file':>6} {'identify wall/cpu':>17} {'xRT cpu':>8} "
                      f"{'model cpu':>9} {'xRT':>6} {'model share':>11} {'peak RSS':>9} "
                      f"{'RSS growth':>10} {'py peak':>8}")
                mem = {}
                for d in durations:
                    reps = args.repeats if d <= 60 else min(2, args.repeats)
                    w_id, c_id = time_identify(ident, files[d], reps)
                    _, c_m = time_model(ident, files[d], reps)
                    m = mem[d] = measure_memory(exp, files[d], backend)
                    growth = (m["peak_kb"] - m["base_kb"]) / 1024
                    print(f"    {int(d):>5}s {w_id:>7.3f}s/{c_id:>7.3f}s {d / c_id:>7.0f}x "
                          f"{c_m:>8.3f}s {d / c_m:>5.0f}x {c_m / c_id:>11.0%} "
                          f"{m['peak_kb'] / 1024:>7.0f}MB {growth:>8.1f}MB "
                          f"{m['py_peak_kb'] / 1024:>6.1f}MB")
                b = mem[durations[-1]]
                for d in durations[:-1]:
                    a = mem[d]
                    grow_a = max(1, a["peak_kb"] - a["base_kb"])
                    print(f"    memory {int(durations[-1])} s / {int(d)} s: "
                          f"peak RSS {b['peak_kb'] / a['peak_kb']:.2f}x, RSS growth "
                          f"{(b['peak_kb'] - b['base_kb']) / grow_a:.2f}x, py peak "
                          f"{b['py_peak_kb'] / max(1e-9, a['py_peak_kb']):.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
