"""Plots are written, non-empty, with one attention bar per segment; ``lre plot`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from matplotlib.container import BarContainer

from lre import metrics, plots
from lre.cli import main
from lre.data.datadir import DataDir
from lre.inference.records import ResultRecord
from lre.utils import LreError

SR = 16000


def tone_with_gap(seconds: float = 4.2) -> np.ndarray:
    """0.5 s silence, tone, 1 s silence in the middle, tone: a real signal with structure."""
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.4 * np.sin(2 * np.pi * 300 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave[(t < 0.5) | ((t > 2.0) & (t < 3.0))] = 0.0
    return wave.astype(np.float32)


SEGMENTS = [
    {"start": 0.5, "end": 1.6, "weight": 0.35},
    {"start": 1.5, "end": 2.0, "weight": 0.15},
    {"start": 3.0, "end": 4.1, "weight": 0.5},
]


def attention_bars(fig) -> BarContainer:
    ax = fig.axes[2]
    assert ax.get_label() == "attention"
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 1
    return bars[0]


@pytest.mark.parametrize("timeline", [False, True])
def test_attention_figure_one_bar_per_segment(timeline):
    tl = np.array([[.7, .2, .1], [.5, .4, .1], [.1, .1, .8]]) if timeline else None
    fig = plots.attention_figure(tone_with_gap(), SR, SEGMENTS, title="utt1",
                                 posteriors={"fi": .8, "sv": .15, "en": .05}, timeline=tl,
                                 langs=["fi", "sv", "en"] if timeline else None)
    try:
        bars = attention_bars(fig)
        assert len(bars.patches) == len(SEGMENTS)
        for patch, seg in zip(bars.patches, SEGMENTS, strict=True):
            assert patch.get_x() == pytest.approx(seg["start"])
            assert patch.get_width() == pytest.approx(seg["end"] - seg["start"])
            assert patch.get_height() == pytest.approx(seg["weight"])
        assert len(fig.axes) == (4 if timeline else 3)
        assert fig.axes[-1].get_xlabel() == "time (s)"
        title = fig._suptitle.get_text()
        assert "utt1" in title and "predicted fi (p = 0.800)" in title
        if timeline:
            stacked = [c for c in fig.axes[3].containers if isinstance(c, BarContainer)]
            assert len(stacked) == 3 and all(len(c.patches) == 3 for c in stacked)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_attention_title_says_an_answer_other_than_the_top_language():
    """An open-set "unknown" is the answer the title gives, beside the top posterior."""
    for decision, said in (("unknown", "answer unknown (top fi, p = 0.800)"),
                           ("fi", "predicted fi (p = 0.800)"),
                           (None, "predicted fi (p = 0.800)")):
        fig = plots.attention_figure(tone_with_gap(), SR, SEGMENTS, title="utt1",
                                     posteriors={"fi": .8, "sv": .2}, decision=decision)
        try:
            assert said in fig._suptitle.get_text(), decision
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_plot_attention_files(tmp_path, ext):
    out = plots.plot_attention(tone_with_gap(), SR, SEGMENTS, tmp_path / f"att.{ext}",
                               title="utt1", posteriors={"fi": .8, "sv": .2})
    data = out.read_bytes()
    assert len(data) > 5000
    if ext == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        text = data.decode()
        assert "<svg" in text
        # each attention bar is an SVG group named by its segment index
        assert text.count('id="attention-segment-') == len(SEGMENTS)
    with pytest.raises(LreError, match="unsupported plot format"):
        plots.plot_attention(tone_with_gap(), SR, SEGMENTS, tmp_path / "att.jpg")


def test_confusion_and_det_written(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    scores = rng.normal(size=(90, 3))
    scores[np.arange(90), labels] += 1.5
    cm = metrics.confusion(labels, metrics.argmax_decisions(scores), 3)
    fig = plots.confusion_figure(cm, ["en", "fi", "sv"], [*"en fi sv".split(), "unknown"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en", "fi", "sv"]  # empty unknown
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(cm[:, :3].ravel().tolist())
    out = plots.save_figure(fig, tmp_path / "confusion.png")
    assert out.stat().st_size > 5000
    fig = plots.det_figure(metrics.llr_from_logpost(scores), labels, ["en", "fi", "sv"])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [x.split()[0] for x in legend] == ["en", "fi", "sv", "pooled"]
    pooled = metrics.pooled_eer(labels, metrics.llr_from_logpost(scores))
    assert legend[-1] == f"pooled (EER {100 * pooled:.1f}%)"
    plots.save_figure(fig, tmp_path / "det.pdf")
    assert (tmp_path / "det.pdf").read_bytes()[:4] == b"%PDF"


def test_cli_plot_attention_from_data_dir_and_identify_json(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone_with_gap(), SR, subtype="PCM_16")
    data = tmp_path / "data"
    DataDir(data, wav_scp={"utt1": str(wav)}, utt2lang={"utt1": "fi"},
            utt2spk={"utt1": "s1"}).write()
    record = {"utt": "utt1", "pred": "fi", "posteriors": {"fi": 0.8, "sv": 0.2},
              "segments": SEGMENTS}
    att = tmp_path / "attention.jsonl"
    att.write_text(json.dumps({**record, "utt": "other"}) + "\n" + json.dumps(record) + "\n")
    out = tmp_path / "utt1.png"
    rc = main(["plot", "attention", "--attention", str(att), "--utt", "utt1", "--data",
               str(data), "--out", str(out)])
    assert rc == 0 and out.stat().st_size > 5000
    # identify --json --timeline style record, audio given on the command line
    ident = {"source": str(wav), "language": "fi", "probability": 0.8,
             "posteriors": {"fi": 0.8, "sv": 0.2}, "segments": SEGMENTS,
             "timeline": [{"start": s["start"], "end": s["end"],
                           "posteriors": {"fi": 0.6, "sv": 0.4}} for s in SEGMENTS]}
    one = tmp_path / "one.json"
    one.write_text(json.dumps(ident) + "\n")
    out2 = tmp_path / "file.svg"
    assert main(["plot", "attention", "--json", str(one), "--audio", str(wav),
                 "--out", str(out2)]) == 0
    assert "<svg" in out2.read_text()
    timeline, langs = ResultRecord.from_dict(ident).timeline_array()
    assert langs == ["fi", "sv"] and timeline.shape == (3, 2)
    rc = main(["plot", "attention", "--attention", str(att), "--utt", "missing", "--data",
               str(data), "--out", str(out)])
    assert rc == 1
    assert "no record for 'missing'" in capsys.readouterr().err


def test_cli_plot_confusion_and_det(tmp_path):
    from lre.data.tables import write_table

    rng = np.random.default_rng(1)
    langs = ["en", "fi"]
    labels = rng.integers(0, 2, 40)
    logits = rng.normal(size=(40, 2))
    logits[np.arange(40), labels] += 2
    logpost = metrics.log_softmax(logits)
    utts = [f"u{i:02d}" for i in range(40)]
    metrics.write_scores(tmp_path / "scores.tsv", utts, langs, logpost)
    write_table(tmp_path / "data" / "utt2lang", {u: langs[k] for u, k in zip(utts, labels,
                                                                             strict=True)})
    assert main(["plot", "confusion", "--scores-dir", str(tmp_path), "--data",
                 str(tmp_path / "data")]) == 0
    assert (tmp_path / "confusion.png").stat().st_size > 5000
    # no llr.tsv: falls back to the scores
    assert main(["plot", "det", "--scores-dir", str(tmp_path), "--data",
                 str(tmp_path / "data"), "--out", str(tmp_path / "d.svg")]) == 0
    assert (tmp_path / "d.svg").stat().st_size > 5000
