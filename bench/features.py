"""Feature-stage throughput against kaldi-native-fbank and librosa, on one thread.

    .venv/bin/python bench/features.py [--minutes 10] [--utt-seconds 10] [--repeats 3]

Makes ``--minutes`` of 16 kHz speech (espeak-ng voices of several languages over a faint
noise floor, cut into ``--utt-seconds`` utterances, 16-bit WAVs in a temporary Kaldi data
dir) and prints seconds of audio per CPU second for:

* ours, whole stage: ``lre.features.compute_features`` with ``--nj 1`` = split, read WAV,
  40-bin fbank, energy VAD, write ark/scp, merge (CPU of the stage and its job process);
* ours, whole stage + CMVN: the above plus reading every matrix back with kaldiio and
  ``postprocess`` (voiced frames, per-utterance CMVN, sliding CMN), which the default
  configuration does when features are read;
* bare kaldi-native-fbank (Python API, the same options, audio already in memory);
* librosa log-mel (40 bins, 512-point FFT, 400/160 window/hop, in memory);

the ratios ours / kaldi-native-fbank, and the wall-clock speed-up of the stage with
``--nj 2`` over ``--nj 1``. Every figure is the best of ``--repeats`` runs; BLAS and torch
are limited to one thread (the ``--nj 2`` run uses two single-threaded jobs).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import kaldiio  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from lre.data.audio import resample  # noqa: E402
from lre.data.datadir import DataDir  # noqa: E402
from lre.features import FeatureConfig, compute_features, postprocess  # noqa: E402

SENTENCES = {
    "en": "The quick brown fox jumps over the lazy dog while the children watch from the "
          "garden, and nobody says a word until the sun goes down behind the hills.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund, während die Kinder aus "
          "dem Garten zuschauen und niemand ein Wort sagt.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux pendant que les enfants "
          "regardent depuis le jardin sans dire un mot.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso mientras los niños miran "
          "desde el jardín sin decir una palabra.",
    "fi": "Nopea ruskea kettu hyppää laiskan koiran yli, kun lapset katsovat puutarhasta "
          "eikä kukaan sano sanaakaan.",
    "it": "La veloce volpe marrone salta sopra il cane pigro mentre i bambini guardano dal "
          "giardino senza dire una parola.",
}


def _cpu() -> float:
    """CPU seconds of this process and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_data(root: Path, minutes: float, utt_seconds: float, sr: int = 16000) -> DataDir:
    """``minutes`` of espeak speech as ``utt_seconds`` utterances in a Kaldi data dir."""
    if shutil.which("espeak-ng") is None:
        sys.exit("bench/features.py needs espeak-ng (apt-get install espeak-ng)")
    rng = np.random.default_rng(0)
    clips = []
    for lang, text in SENTENCES.items():
        tmp = root / f"clip_{lang}.wav"
        subprocess.run(["espeak-ng", "-v", lang, "-w", str(tmp), text], check=True,
                       capture_output=True)
        audio, rate = sf.read(tmp, dtype="float32")
        clips.append((lang, resample(audio, rate, sr)))
        tmp.unlink()
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True)
    n_utts = int(round(minutes * 60 / utt_seconds))
    length = int(utt_seconds * sr)
    wav_scp, utt2lang, utt2spk = {}, {}, {}
    for i in range(n_utts):
        lang, clip = clips[i % len(clips)]
        reps = int(np.ceil(length / (len(clip) + sr // 4))) + 1
        pause = np.zeros(sr // 4, dtype=np.float32)
        long = np.concatenate([np.concatenate([clip, pause]) for _ in range(reps)])
        start = int(rng.integers(0, len(long) - length))
        wave = long[start : start + length] + 0.003 * rng.standard_normal(length).astype(
            np.float32)
        utt = f"spk{i % 7}-{lang}-{i:04d}"
        path = wav_dir / f"{utt}.wav"
        sf.write(path, np.clip(wave, -1, 1), sr, subtype="PCM_16")
        wav_scp[utt], utt2lang[utt], utt2spk[utt] = str(path), lang, f"spk{i % 7}"
    dd = DataDir(root / "data", wav_scp=wav_scp, utt2lang=utt2lang, utt2spk=utt2spk)
    dd.write()
    return dd


def best(fn, repeats: int) -> float:
    """Least CPU seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t = _cpu()
        fn()
        times.append(_cpu() - t)
    return min(times)


def bench_stage(dd: DataDir, root: Path, config: FeatureConfig, nj: int) -> None:
    compute_features(dd.path, config, nj=nj, feat_dir=root / f"feats{nj}",
                     log_dir=root / f"log{nj}", force=True)


def bench_read_postprocess(dd: DataDir, config: FeatureConfig) -> None:
    feats = kaldiio.load_scp(str(dd.path / "feats.scp"))
    vads = kaldiio.load_scp(str(dd.path / "vad.scp"))
    for utt in feats:
        postprocess(feats[utt], vads[utt], config)


def bench_knf(waves: list[np.ndarray], config: FeatureConfig) -> None:
    import kaldi_native_fbank as knf

    k = config.kaldi
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = k.sample_frequency
    opts.frame_opts.frame_length_ms = k.frame_length
    opts.frame_opts.frame_shift_ms = k.frame_shift
    opts.frame_opts.dither = k.dither
    opts.frame_opts.preemph_coeff = k.preemphasis_coefficient
    opts.frame_opts.remove_dc_offset = k.remove_dc_offset
    opts.frame_opts.window_type = k.window_type
    opts.frame_opts.round_to_power_of_two = k.round_to_power_of_two
    opts.frame_opts.snip_edges = k.snip_edges
    opts.mel_opts.num_bins = k.num_mel_bins
    opts.mel_opts.low_freq = k.low_freq
    opts.mel_opts.high_freq = k.high_freq
    opts.use_energy = k.use_energy
    opts.energy_floor = k.energy_floor
    opts.raw_energy = k.raw_energy
    for wave in waves:
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(k.sample_frequency, wave)
        fb.input_finished()
        np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def bench_librosa(waves: list[np.ndarray], config: FeatureConfig) -> None:
    import librosa

    k = config.kaldi
    for wave in waves:
        mel = librosa.feature.melspectrogram(
            y=wave, sr=config.sample_rate, n_fft=k.padded_window_size, hop_length=k.window_shift,
            win_length=k.window_size, center=False, power=2.0, n_mels=k.num_mel_bins,
            fmin=k.low_freq)
        np.log(np.maximum(mel, 1e-10))


def wall(fn, repeats: int) -> tuple[float, float]:
    """Least wall seconds of ``repeats`` calls, and the CPU seconds of that call."""
    runs = []
    for _ in range(repeats):
        t, c = time.perf_counter(), _cpu()
        fn()
        runs.append((time.perf_counter() - t, _cpu() - c))
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--utt-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    config = FeatureConfig()  # features/fbank.conf + vad.conf + cmvn.conf
    root = Path(tempfile.mkdtemp(prefix="lre-bench-features-"))
    try:
        dd = make_data(root, args.minutes, args.utt_seconds)
        audio = sum(sf.info(p).duration for p in dd.wav_scp.values())
        waves = [sf.read(p, dtype="float32")[0] for p in dd.wav_scp.values()]
        waves_int = [w * 32768.0 for w in waves]
        import logging

        logging.basicConfig(level=logging.WARNING)
        bench_stage(dd, root, config, 1)  # warm-up (imports, split dirs)
        stage = best(lambda: bench_stage(dd, root, config, 1), args.repeats)
        post = best(lambda: bench_read_postprocess(dd, config), args.repeats)
        knf_cpu = best(lambda: bench_knf(waves_int, config), args.repeats)
        lib_cpu = best(lambda: bench_librosa(waves, config), args.repeats)
        bench_stage(dd, root, config, 2)
        wall1, wall2 = (float("inf"), 0.0), (float("inf"), 0.0)
        for _ in range(args.repeats):  # interleaved: both see the same machine load
            wall1 = min(wall1, wall(lambda: bench_stage(dd, root, config, 1), 1))
            wall2 = min(wall2, wall(lambda: bench_stage(dd, root, config, 2), 1))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rate = {
        "ours: whole stage (read + fbank + VAD + write)": audio / stage,
        "ours: whole stage + CMVN on read": audio / (stage + post),
        "kaldi-native-fbank, bare (in memory)": audio / knf_cpu,
        "librosa log-mel, bare (in memory)": audio / lib_cpu,
    }
    knf_rate = audio / knf_cpu
    print(f"feature benchmark: {audio / 60:.1f} min of 16 kHz audio in "
          f"{len(waves)} utterances of {args.utt_seconds:g} s; 40-bin fbank, one thread, "
          f"best of {args.repeats}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    print(f"{'':52s} {'audio s / CPU s':>16s}")
    for name, r in rate.items():
        print(f"{name:52s} {r:16.0f}")
    print(f"{'ratio ours / kaldi-native-fbank (stage)':52s} "
          f"{rate['ours: whole stage (read + fbank + VAD + write)'] / knf_rate:16.2f}"
          f"   target >= 1.5")
    print(f"{'ratio ours / kaldi-native-fbank (stage + CMVN)':52s} "
          f"{rate['ours: whole stage + CMVN on read'] / knf_rate:16.2f}   target >= 1.5")
    print(f"{'stage wall time --nj 1 / --nj 2 (s)':52s} {wall1[0]:7.3f} / {wall2[0]:6.3f}")
    # CPU seconds per wall second of the stage: ~2 for --nj 2 when both cores are free.
    print(f"{'cores busy with the stage, --nj 1 / --nj 2':52s} "
          f"{wall1[1] / wall1[0]:7.2f} / {wall2[1] / wall2[0]:6.2f}")
    print(f"{'speed-up --nj 2 over --nj 1':52s} {wall1[0] / wall2[0]:16.2f}   target >= 1.7")
    return 0


if __name__ == "__main__":
    sys.exit(main())
