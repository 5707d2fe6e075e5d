"""Benchmark the start-up of ``lre identify``: wall time of the whole command on one short file.

Each command runs as a fresh process (as a user types it), interleaved with peer commands
measured in the same run, so that the load of a shared machine hits all alike:

- ``python -c pass``: the interpreter alone;
- ``python -c "import torch"``: the floor of anything that imports torch;
- ``lre identify --help``: the command line without the model or the feature pipeline;
- ``lre identify --model EXP FILE --backend torch|onnx`` on one 5 s 16 kHz WAV of
  espeak-ng speech, with the recipe's model size (untrained weights) and a ``model.onnx``
  exported from the same checkpoint (so the onnx backend does not export in memory).

It prints the best and the median wall time of ``--repeats`` runs of each, and what each
identify costs above ``import torch``. Usage:

    .venv/bin/python bench/startup.py [--repeats 7] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from identify import make_exp, make_speech, recipe_model_config  # noqa: E402


def wall(cmd: list[str]) -> float:
    """Seconds from start to exit of ``cmd`` (its output discarded; a failure raises)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="runs of each command")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the file")
    args = ap.parse_args()
    py = sys.executable
    script = Path(py).parent / "lre"  # the console script a user runs
    lre = [str(script)] if script.is_file() else [py, "-m", "lre.cli"]
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exp = make_exp(tmp / "exp", recipe_model_config())
        subprocess.run([*lre, "export", "--model-dir", str(exp), "--format", "onnx"],
                       check=True, capture_output=True)
        audio = make_speech(tmp / "speech.wav", args.seconds)
        commands = {
            "python -c pass": [py, "-c", "pass"],
            'python -c "import torch"': [py, "-c", "import torch"],
            "lre identify --help": [*lre, "identify", "--help"],
        }
        for backend in ("torch", "onnx"):
            commands[f"lre identify --backend {backend}"] = [
                *lre, "identify", "--model", str(exp), str(audio), "--backend", backend]
        for cmd in commands.values():  # warm the page cache, check that each one runs
            wall(cmd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                times[name].append(wall(cmd))
    import torch

    print(f"lre identify start-up: one {args.seconds:g} s 16 kHz WAV, recipe-size HGRU, "
          f"fresh process per run, {args.repeats} runs each, interleaved")
    print(f"machine: {os.uname().machine}, {os.cpu_count()} CPUs, python "
          f"{sys.version.split()[0]}, torch {torch.__version__}")
    floor = min(times['python -c "import torch"'])
    print(f"{'command':<34} {'best s':>7} {'median s':>9} {'best - import torch':>20}")
    for name, t in times.items():
        print(f"{name:<34} {min(t):7.2f} {statistics.median(t):9.2f} "
              f"{min(t) - floor:+20.2f}")


if __name__ == "__main__":
    main()
