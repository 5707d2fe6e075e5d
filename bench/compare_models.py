"""The table of bench/compare_models.sh: models trained by the same recipe, side by side.

    python bench/compare_models.py table exp_compare/params/{hgru,bigru,tdnn,ecapa}
    python bench/compare_models.py epochs --reference exp_compare/time/hgru \
        --probe exp_compare/time/probe_tdnn

``table`` reads each model dir as ``./run.sh`` leaves it (``results.json`` with the
conditions, ``metrics.csv``, ``final.pt``), measures the identify real-time factor of each
model on the same audio in this process (one thread, features included), and prints a
Markdown table per figure (rows: conditions, columns: models) plus a table of parameters,
training time and real-time factor. The HGRU's column is the peer the others are compared
with: the last line counts, per figure, the conditions where it is at least as good as the
best of the others.

``ablation`` tabulates HGRU variants trained by bench/hgru_variants.sh (each dir with
``variant``, ``metrics.csv``, ``final.pt`` and evaluated ``dev`` and ``test``).

``epochs`` prints how many epochs of the probed model fill the reference's training time.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: (title, results.json key, scale, digits, higher is better)
FIGURES = [
    ("accuracy (%)", "accuracy", 100.0, 2, True),
    ("EER (%)", "EER", 100.0, 2, False),
    ("min-Cavg x100", "minCavg", 100.0, 2, False),
    ("Cllr (bits, pooled)", "Cllr", 1.0, 3, False),
]
#: Sets of languages the model does not know: no closed-set figures to compare.
OPEN_SET_ONLY = ("test_oos", "test_human_oos")


def train_seconds(model_dir: Path) -> tuple[float, int]:
    """Sum of the epoch times in ``metrics.csv`` and the number of epochs."""
    with open(model_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return sum(float(r["seconds"]) for r in rows), len(rows)


def epochs_to_match(reference: Path, probe: Path) -> int:
    """Epochs of the probed model that take as long as the reference's whole training
    (the probe's first epoch is left out when it has more: it warms caches)."""
    total, _ = train_seconds(reference)
    with open(probe / "metrics.csv", newline="") as f:
        secs = [float(r["seconds"]) for r in csv.DictReader(f)]
    per_epoch = sum(secs[1:]) / len(secs[1:]) if len(secs) > 1 else secs[0]
    return max(1, round(total / per_epoch))


def identify_rtf(model_dir: Path, seconds: float = 60.0) -> float:
    """Seconds of audio identified per second of one CPU thread (features included)."""
    import torch

    from bench.identify import make_speech
    from lre.identify import Identifier

    torch.set_num_threads(1)
    ident = Identifier.from_pretrained(model_dir, num_threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        audio = make_speech(Path(tmp) / "speech.wav", seconds)
        ident.identify(str(audio))  # warm-up
        best = math.inf
        for _ in range(3):
            t = time.process_time()
            ident.identify(str(audio))
            best = min(best, time.process_time() - t)
    return seconds / best


def model_facts(model_dir: Path) -> dict[str, float | int | str]:
    from lre.models import load_model

    model, meta = load_model(model_dir / "final.pt")
    secs, epochs = train_seconds(model_dir)
    return {"model": meta["model_name"], "params": model.num_parameters(),
            "train_s": secs, "epochs": epochs, "rtf": identify_rtf(model_dir)}


def fmt(value: float | None, scale: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}"


def comparison(dirs: list[Path]) -> str:
    results = [json.loads((d / "results.json").read_text())["conditions"] for d in dirs]
    facts = [model_facts(d) for d in dirs]
    names = [str(f["model"]) for f in facts]
    conditions = [c for c in results[0] if c not in OPEN_SET_ONLY]
    out = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
           "| parameters | " + " | ".join(f"{f['params'] / 1e3:.0f} k" for f in facts) + " |",
           "| epochs | " + " | ".join(str(f["epochs"]) for f in facts) + " |",
           "| training time (min, 2 cores) | "
           + " | ".join(f"{float(f['train_s']) / 60:.1f}" for f in facts) + " |",
           "| identify xRT (1 thread) | "
           + " | ".join(f"{float(f['rtf']):.0f}x" for f in facts) + " |", ""]
    ref = names.index("hgru") if "hgru" in names else None
    for title, key, scale, digits, higher in FIGURES:
        out += [f"{title}:", "", "| condition | utts | " + " | ".join(names) + " |",
                "|---|---:|" + "---:|" * len(names)]
        wins = 0
        for cond in conditions:
            vals = [r.get(cond, {}).get(key) for r in results]
            utts = results[0][cond]["num_utts"]
            out.append(f"| {cond} | {utts} | "
                       + " | ".join(fmt(v, scale, digits) for v in vals) + " |")
            if ref is not None and all(v is not None for v in vals):
                others = [v for i, v in enumerate(vals) if i != ref]
                best = max(others) if higher else min(others)
                wins += vals[ref] >= best if higher else vals[ref] <= best
        if ref is not None and len(names) > 1:
            out.append(f"\nHGRU at least as good as every other model on {wins} of "
                       f"{len(conditions)} conditions.")
        out.append("")
    return "\n".join(out)


def _variant_row(d: Path) -> dict[str, object]:
    """What one variant dir holds: its name, overrides, size, time and dev/test figures."""
    from lre.models import load_model

    name, _, overrides = (d / "variant").read_text().partition("\n")
    with open(d / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    secs = [float(r["seconds"]) for r in rows]
    model, _ = load_model(d / "final.pt")
    return {"name": name, "overrides": overrides.strip() or "-",
            "params": model.num_parameters(), "epoch_s": sorted(secs)[len(secs) // 2],
            "train_s": sum(secs), "best_dev": max(float(r["dev_acc"]) for r in rows),
            "dev": json.loads((d / "dev" / "results.json").read_text()),
            "test": json.loads((d / "test" / "results.json").read_text())}


def seed_group(name: str) -> str:
    """The variant a run repeats with another seed: ``ls005_seed2`` -> ``ls005``; the
    recipe's own seeds (``seed1``) group with ``base``."""
    return re.sub(r"(^|_)seed\d+$", "", name) or "base"


#: Figures of the means over seeds: (title, dev or test, results.json key, scale, digits).
SEED_MEANS = [("dev acc (%)", "dev", "accuracy", 100.0, 2),
              ("dev Cllr_mc", "dev", "Cllr_mc", 1.0, 3),
              ("test acc (%)", "test", "accuracy", 100.0, 2),
              ("test EER (%)", "test", "EER", 100.0, 2),
              ("test Cllr_mc", "test", "Cllr_mc", 1.0, 3)]


def seed_means(rows: list[dict[str, object]]) -> str:
    """The mean of each figure over the seeds of every variant run with more than one."""
    groups: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault(seed_group(str(r["name"])), []).append(r)
    out = ["| variant | seeds | " + " | ".join(t for t, *_ in SEED_MEANS) + " |",
           "|---|---:|" + "---:|" * len(SEED_MEANS)]
    for group, members in groups.items():
        if len(members) < 2:
            continue
        cells = [fmt(sum(m[part][key] for m in members) / len(members),  # type: ignore[index]
                     scale, digits) for _, part, key, scale, digits in SEED_MEANS]
        out.append(f"| {group} | {len(members)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n" if len(out) > 2 else ""


def ablation(dirs: list[Path]) -> str:
    """One row per variant: what chooses (dev) and what only measures (test); then the
    means over seeds of the variants run with several."""
    out = ["| variant | overrides | params | s/epoch (median) | train min | best dev acc (%) | "
           "dev acc, final (%) | dev Cllr_mc | test acc (%) | test EER (%) | "
           "test min-Cavg x100 | test Cllr | test Cllr_mc |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [_variant_row(d) for d in dirs]
    for r in rows:
        dev, test = r["dev"], r["test"]
        out.append(
            f"| {r['name']} | `{r['overrides']}` | {float(r['params']) / 1e3:.0f} k | "
            f"{float(r['epoch_s']):.1f} | {float(r['train_s']) / 60:.1f} | "
            f"{float(r['best_dev']) * 100:.2f} | {fmt(dev['accuracy'], 100, 2)} | "
            f"{fmt(dev.get('Cllr_mc'), 1, 3)} | {fmt(test['accuracy'], 100, 2)} | "
            f"{fmt(test['EER'], 100, 2)} | {fmt(test['minCavg'], 100, 2)} | "
            f"{fmt(test['Cllr'], 1, 3)} | {fmt(test.get('Cllr_mc'), 1, 3)} |")
    means = seed_means(rows)
    conditions = condition_accuracies(dirs, [str(r["name"]) for r in rows])
    return ("\n".join(out) + "\n" + ("\nMeans over seeds:\n\n" + means if means else "")
            + ("\nAccuracy (%) per condition:\n\n" + conditions if conditions else ""))


#: The sets of the per-condition table of the ablation, when a variant has them evaluated.
DEV_CONDITIONS = ("dev", "dev_noisy", "dev_reverb", "dev_tel")
TEST_CONDITIONS = ("test", "test_noisy", "test_reverb", "test_tel", "test_human")


def condition_accuracies(dirs: list[Path], names: list[str]) -> str:
    """Accuracy of each variant on the dev conditions (and their mean: what chooses) and on
    the test conditions, for the sets every variant has a results.json of."""
    sets = [s for s in DEV_CONDITIONS + TEST_CONDITIONS
            if all((d / s / "results.json").is_file() for d in dirs)]
    devs = [s for s in sets if s in DEV_CONDITIONS]
    if len(sets) <= 2:
        return ""
    head = sets[:len(devs)] + (["dev mean"] if len(devs) > 1 else []) + sets[len(devs):]
    out = ["| variant | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for d, name in zip(dirs, names, strict=True):
        acc = {s: json.loads((d / s / "results.json").read_text())["accuracy"] for s in sets}
        cells = [fmt(acc[s], 100, 2) for s in devs]
        if len(devs) > 1:
            cells.append(fmt(sum(acc[s] for s in devs) / len(devs), 100, 2))
        cells += [fmt(acc[s], 100, 2) for s in sets[len(devs):]]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="the comparison table of trained model dirs")
    t.add_argument("dirs", nargs="+", type=Path)
    t.add_argument("--data-dir", default="data", help="(recorded in the table's heading)")
    t.add_argument("--out", type=Path, help="also write the table here")
    a = sub.add_parser("ablation", help="the table of HGRU variants")
    a.add_argument("dirs", nargs="+", type=Path)
    a.add_argument("--out", type=Path)
    e = sub.add_parser("epochs", help="epochs of a probed model that match a training time")
    e.add_argument("--reference", type=Path, required=True)
    e.add_argument("--probe", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "epochs":
        print(epochs_to_match(args.reference, args.probe))
        return
    if args.cmd == "ablation":
        text = ablation(args.dirs)
        print(text)
        if args.out:
            args.out.write_text(text)
        return
    text = (f"# Models trained by the same recipe ({args.data_dir})\n\n"
            "Figures of the scores the run reports (after its calibration stage), "
            "pooled EER and Cllr; closed-set conditions only.\n\n"
            + comparison(args.dirs))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
