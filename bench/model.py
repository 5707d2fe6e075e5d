"""Benchmark the models' training and inference throughput at matched hidden sizes.

Prints, for the HGRU (H1 = H2 = H3 = H, 256 unless ``--hidden``), the flat BiGRU (H per
direction) and the x-vector TDNN (2H channels = the width of a BiGRU state), on batches of
``--batch`` utterances of ``--seconds`` seconds (100 frames per second):

- training throughput (forward, cross-entropy, backward and an Adam step) in frames/s;
- inference throughput (``torch.inference_mode``, eval mode) in frames/s and in times real
  time;
- the ratios HGRU / BiGRU and HGRU / TDNN, and the targets (HGRU training >= 3x the BiGRU,
  HGRU inference >= 1000x real time on one thread);
- what each level-1 implementation of the HGRU buys (``WindowGRU.impl``), the smaller HGRU
  (H = 128) and bf16 autocast inference with its largest posterior difference from fp32.

Each figure is the best of ``--reps`` timed runs after one warm-up run (the least disturbed
estimate on a shared machine); on one CPU thread the time is that thread's CPU time, so that
other processes on the machine do not count. Untrained weights: the cost does not depend on
their values.

    .venv/bin/python bench/model.py [--threads 1] [--batch 32] [--seconds 10] [--hidden 256]
                                    [--device cpu]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lre.models import build_model  # noqa: E402

FRAMES_PER_SECOND = 100


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_time(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    """Best time of ``reps`` runs of ``fn`` after one warm-up run: CPU time of this thread
    when torch runs on one CPU thread (time taken by other processes on a shared machine
    does not count), wall time otherwise."""
    clock = (time.thread_time if device.type == "cpu" and torch.get_num_threads() == 1
             else time.perf_counter)

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - t0

    run()
    return min(run() for _ in range(reps))


class Case:
    """One model on one batch: timings of a training step and of inference."""

    def __init__(self, name: str, config: dict, args: argparse.Namespace,
                 device: torch.device, label: str | None = None):
        self.label = label or name
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        self.model = build_model(name, args.feat_dim, args.langs, config).to(device)
        frames = int(args.seconds * FRAMES_PER_SECOND)
        self.frames = args.batch * frames
        self.x = torch.randn(args.batch, frames, args.feat_dim, generator=g).to(device)
        self.lengths = torch.full((args.batch,), frames, dtype=torch.int64, device=device)
        self.y = torch.randint(0, args.langs, (args.batch,), generator=g).to(device)
        self.device = device
        self.reps = args.reps

    @property
    def params(self) -> int:
        return self.model.num_parameters()

    def train_fps(self) -> float:
        model = self.model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(self.x, self.lengths).logits, self.y)
            loss.backward()
            opt.step()

        return self.frames / best_time(step, self.reps, self.device)

    def infer_fps(self, autocast: torch.dtype | None = None) -> float:
        model = self.model.eval()

        def forward() -> None:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=autocast,
                                                        enabled=autocast is not None):
                model(self.x, self.lengths)

        return self.frames / best_time(forward, self.reps, self.device)

    def posteriors(self, autocast: torch.dtype | None = None) -> torch.Tensor:
        model = self.model.eval()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=autocast,
                                                    enabled=autocast is not None):
            return torch.softmax(model(self.x, self.lengths).logits.float(), dim=-1)


def print_level1_ceiling(case: Case, args: argparse.Namespace, device: torch.device) -> None:
    """The HGRU's level-1 recurrent products alone, timed as plain matmuls of the same
    shapes: the real-time factor inference could reach if nothing else took any time."""
    model = case.model
    wgru = model.window_gru
    frames = int(args.seconds * FRAMES_PER_SECOND)
    segments = -(-frames // model.segment_hop)
    rows = args.batch * segments * model.segment_windows
    hs = wgru.hidden_size
    g = torch.Generator().manual_seed(0)
    h = torch.rand(rows, hs, generator=g).to(device)
    w = torch.randn(hs, 3 * hs, generator=g).to(device)
    seconds = best_time(lambda: torch.matmul(h, w), args.reps, device)
    steps = wgru.window - 1  # the first step has no recurrent product
    flop = steps * 2.0 * rows * hs * 3 * hs
    audio = args.batch * args.seconds
    print(f"level-1 recurrent products: {steps} x ({rows} x {hs}) @ ({hs} x {3 * hs}) = "
          f"{flop / 1e9:.1f} GFLOP per batch; one such matmul runs at "
          f"{2.0 * rows * hs * 3 * hs / seconds / 1e9:.0f} GFLOP/s here -> at most "
          f"{audio / (steps * seconds):,.0f}x real time in fp32 for them alone")


def fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                     enumerate(zip(cells, widths, strict=True)))


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(fmt_row(header, widths))
    print(fmt_row(["-" * w for w in widths], widths))
    for r in rows:
        print(fmt_row(r, widths))


def xrt(fps: float) -> str:
    return f"{fps / FRAMES_PER_SECOND:,.0f}x"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--batch", type=int, default=32, help="utterances per batch (default 32)")
    p.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    p.add_argument("--feat-dim", type=int, default=40, help="feature dimension (default 40)")
    p.add_argument("--langs", type=int, default=14, help="output languages (default 14)")
    p.add_argument("--reps", type=int, default=3, help="timed runs per figure (default 3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--hidden", type=int, default=256,
                   help="H of the matched comparison: HGRU H1=H2=H3=H, BiGRU H per direction, "
                   "TDNN 2H channels (default 256; the embedded recipe's HGRU has 64)")
    p.add_argument("--skip-extras", action="store_true",
                   help="only the matched-size comparison")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"date {datetime.date.today().isoformat()}; torch {torch.__version__}; "
          f"device {device.type}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f" ({cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, "
                f"{args.threads} thread{'s' * (args.threads != 1)})"))
    clock = ("thread CPU time" if device.type == "cpu" and args.threads == 1
             else "wall time")
    print(f"batch {args.batch} x {args.seconds:g} s utterances ({FRAMES_PER_SECOND} frames/s), "
          f"feat_dim {args.feat_dim}, {args.langs} languages, best of {args.reps} runs "
          f"({clock})\n")

    h = args.hidden
    cases = {
        "hgru": Case("hgru", {"hidden1": h, "hidden2": h, "hidden3": h}, args, device),
        "bigru": Case("bigru", {"hidden": h, "num_layers": 1}, args, device),
        "tdnn": Case("tdnn", {"channels": 2 * h}, args, device),
    }
    results: dict[str, tuple[float, float]] = {}
    for key, case in cases.items():
        results[key] = (case.train_fps(), case.infer_fps())
    print(f"Matched sizes: HGRU H1=H2=H3={h}, BiGRU {h} per direction, TDNN {2 * h} channels")
    table(["model", "params", "train frames/s", "infer frames/s", "infer x real time"],
          [[k, f"{c.params / 1e6:.2f} M", f"{results[k][0]:,.0f}", f"{results[k][1]:,.0f}",
            xrt(results[k][1])] for k, c in cases.items()])
    hg_tr, hg_in = results["hgru"]
    print()
    for other in ("bigru", "tdnn"):
        tr, inf = results[other]
        print(f"HGRU / {other}: training {hg_tr / tr:.2f}x, inference {hg_in / inf:.2f}x")
    ratio = hg_tr / results["bigru"][0]
    print(f"target HGRU training >= 3x BiGRU: {ratio:.2f}x -> "
          f"{'met' if ratio >= 3 else 'NOT met'}")
    rt = hg_in / FRAMES_PER_SECOND
    if device.type == "cpu" and args.threads != 1:
        verdict = f"not judged: the target is for 1 thread, this run used {args.threads}"
    else:
        verdict = "met" if rt >= 1000 else "NOT met"
    print(f"target HGRU inference >= 1000x real time: {rt:,.0f}x at H={h} -> {verdict}")
    print_level1_ceiling(cases["hgru"], args, device)
    if args.skip_extras:
        return 0

    hgru = cases["hgru"]
    wgru = hgru.model.window_gru
    print(f"\nHGRU H={h}, level-1 implementation (WindowGRU.impl)")
    rows = []
    for impl in ("native", "unrolled", "unrolled_shared"):
        wgru.impl = impl
        train, infer = hgru.train_fps(), hgru.infer_fps()
        rows.append([impl, f"{train:,.0f}", f"{infer:,.0f}", xrt(infer)])
    wgru.impl = "auto"
    table(["impl", "train frames/s", "infer frames/s", "infer x real time"], rows)

    print("\nHGRU sizes and bf16 autocast inference")
    small = Case("hgru", {"hidden1": 128, "hidden2": 128, "hidden3": 128, "dense": 256},
                 args, device, label="hgru H=128")
    rows = []
    for case, label in ((hgru, f"hgru H={h}"), (small, "hgru H=128, dense 256")):
        train, infer = case.train_fps(), case.infer_fps()
        bf16 = case.infer_fps(torch.bfloat16)
        diff = (case.posteriors(torch.bfloat16) - case.posteriors()).abs().max().item()
        rows.append([label, f"{case.params / 1e6:.2f} M", f"{train:,.0f}", xrt(infer),
                     xrt(bf16), f"{diff:.1e}"])
    table(["model", "params", "train frames/s", "fp32 x RT", "bf16 x RT",
           "max |d posterior| bf16"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
