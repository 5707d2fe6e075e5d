"""``lre evaluate``: results.json, report.md with linked plots, summary on stdout."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lre import evaluate, metrics
from lre.cli import main
from lre.data.datadir import DataDir
from lre.utils import LreError

LANGS = ["en", "fi", "sv"]
# The reference vector of the metric tests (labels and posteriors), as utterances u0..u7.
LABELS = [0, 1, 1, 1, 0, 2, 1, 2]
POSTERIORS = [[.1, .2, .9], [.9, .2, 0], [.1, .9, 0], [.2, .8, .5], [.6, .3, .1],
              [.1, 0, .7], [.1, 0, .7], [.9, .1, 0]]
DURATIONS = {"u0": 2.0, "u1": 2.0, "u2": 2.0, "u3": 2.0, "u4": 5.0, "u5": 5.0, "u6": 5.0,
             "u7": 12.0, "u8": 2.5, "u9": 4.0}


@pytest.fixture
def scored_set(tmp_path, tone_wav):
    """u0..u7: the reference vector; u8 (fi) never scored; u9 speaks 'xx', unknown to the
    model; 'zz' is scored but not in the data dir."""
    utt2lang = {f"u{i}": LANGS[k] for i, k in enumerate(LABELS)}
    utt2lang.update(u8="fi", u9="xx")
    wav_scp = {}
    for utt, dur in DURATIONS.items():
        wav_scp[utt] = str(tone_wav(tmp_path / "wav" / f"{utt}.wav", dur,
                                    freq=200 + 40 * int(utt[1:])))
    data = tmp_path / "data" / "test"
    DataDir(data, wav_scp=wav_scp, utt2lang=utt2lang, utt2spk={u: u for u in utt2lang},
            utt2dur=DURATIONS).write()
    post = np.array(POSTERIORS + [[.5, .3, .2], [.3, .3, .4]])
    with np.errstate(divide="ignore"):
        logpost = np.log(post)
    utts = [f"u{i}" for i in range(8)] + ["u9", "zz"]
    scores_dir = tmp_path / "exp" / "test"
    metrics.write_scores(scores_dir / "scores.tsv", utts, LANGS, logpost)
    metrics.write_scores(scores_dir / "llr.tsv", utts, LANGS, metrics.llr_from_logpost(logpost))
    with open(scores_dir / "attention.jsonl", "w") as f:
        for i in (2, 5, 7):
            dur = DURATIONS[f"u{i}"]
            k = int(dur)  # 1 s segments
            segs = [{"start": float(j), "end": float(min(j + 1.1, dur)), "weight": 1 / k}
                    for j in range(k)]
            rec = {"utt": f"u{i}", "pred": LANGS[int(np.argmax(post[i]))],
                   "posteriors": dict(zip(LANGS, (post[i] / post[i].sum()).round(4).tolist(),
                                          strict=True)),
                   "segments": segs}
            f.write(json.dumps(rec) + "\n")
        f.write("not json\n")
    return scores_dir, data


def test_evaluate_writes_results_report_and_plots(scored_set):
    scores_dir, data = scored_set
    res = evaluate.evaluate(scores_dir, data)
    saved = json.loads((scores_dir / "results.json").read_text())
    for key in ("accuracy", "Cavg", "minCavg", "nist", "EER", "Cllr", "Cllr_mc", "per_language",
                "confusion", "duration_buckets", "missing", "open_set", "plots"):
        assert key in saved, key
    assert saved["missing"] == ["u8"]
    assert saved["out_of_set_langs"] == ["xx"]
    assert saved["num_unlabelled_scores"] == 1
    # 9 in-set utterances: the 4 right answers of the reference vector; u8 is an error.
    assert saved["accuracy"] == pytest.approx(4 / 9)
    # Cavg by hand: Pmiss = (1/2, 3/5, 1/2); Pfa(en, fi) = 1/5, Pfa(en, sv) = 1/2,
    # Pfa(sv, en) = 1/2, Pfa(sv, fi) = 1/5, fi accepts nothing else:
    # 1/3 [0.5 (0.5 + 0.6 + 0.5) + 0.25 (0.7 + 0 + 0.7)] = 1.15 / 3
    assert saved["Cavg"] == pytest.approx(1.15 / 3)
    assert saved["per_language"]["fi"]["support"] == 5
    assert saved["per_language"]["fi"]["recall"] == pytest.approx(2 / 5)
    assert saved["confusion"]["matrix"][1] == [1, 2, 1, 1]  # fi row, last column: unscored
    assert saved["Cllr_mc"] is None  # u6's true language has posterior 0: infinite -> null
    assert res["Cllr_mc"] == np.inf
    assert set(saved["nist"]) == {"Cavg@0.5", "Cavg@0.1", "C_primary"}
    # the out-of-set utterance is always given a language without a threshold
    assert saved["open_set"]["oos_false_accept"] == 1.0
    buckets = saved["duration_buckets"]
    assert list(buckets) == ["<3s", "3-10s", ">10s"]
    assert buckets["<3s"]["num_utts"] == 5 and buckets["<3s"]["accuracy"] == pytest.approx(0.4)
    assert buckets[">10s"]["accuracy"] == 0.0
    # plots exist and report.md links each of them (and nothing that is not there)
    md = (scores_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"confusion.png", "det.png"} <= set(links)
    assert len([x for x in links if x.startswith("attention_")]) == 3
    for link in links:
        assert (scores_dir / link).stat().st_size > 5000, link
    chosen = [a["utt"] for a in saved["plots"]["attention"]]
    assert chosen == ["u2", "u7", "u5"]  # most confident right, most confident wrong, longest
    assert "`u8`" in md and "| accuracy (%) | 44.44 |" in md
    assert "## Per language" in md and "| fi | 5 |" in md


def test_cli_evaluate_open_set_prints_table(scored_set, capsys):
    scores_dir, data = scored_set
    (scores_dir / "llr.tsv").unlink()  # derived from the scores when absent
    rc = main(["evaluate", "--scores-dir", str(scores_dir), "--data", str(data),
               "--unknown-threshold", "0.7", "--no-plots"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| metric | all | <3s | 3-10s | >10s |" in out
    assert f"report: {scores_dir / 'report.md'}" in out
    saved = json.loads((scores_dir / "results.json").read_text())
    assert saved["llr"] == "derived from scores.tsv"
    o = saved["open_set"]
    # top posteriors (renormalised): u0 .75 u1 .82 u2 .9 u3 .53 u4 .6 u5 .875 u6 .875 u7 .9,
    # u9 .5 -> unknown for u3, u4, u9; right: u2, u5 and u9 (out-of-set, unknown) = 3 of 10
    assert o["unknown_threshold"] == 0.7
    assert o["accuracy"] == pytest.approx(0.3)
    assert o["oos_false_accept"] == 0.0
    assert o["inset_unknown_rate"] == pytest.approx(2 / 9)
    assert "| open-set accuracy (%) | 30.00 |" in out
    md = (scores_dir / "report.md").read_text()
    assert "![" not in md  # no plots written, none linked
    rc = main(["evaluate", "--scores-dir", str(scores_dir), "--data", str(data),
               "--unknown-threshold", "1.5"])
    assert rc == 1


def test_evaluate_reads_attention_records_in_the_current_layout(scored_set):
    from lre.inference.records import read_records, write_records

    scores_dir, data = scored_set
    path = scores_dir / "attention.jsonl"
    records = list(read_records(path, skip_invalid=True))
    write_records(path, records)
    assert json.loads(path.read_text().splitlines()[0])["id"] == "u2"
    res = evaluate.evaluate(scores_dir, data, max_attention_plots=2)
    assert [a["utt"] for a in res["plots"]["attention"]] == ["u2", "u7"]
    for item in res["plots"]["attention"]:
        assert (scores_dir / item["file"]).stat().st_size > 5000


def _hand_scored_set(root, name: str, post, raw_post=None):
    """exp/<name>/ scored by hand for u0..u7 of LABELS (no audio: evaluated without plots)."""
    utts = [f"u{i}" for i in range(len(LABELS))]
    data = root / "data" / name
    data.mkdir(parents=True)
    (data / "utt2lang").write_text("".join(f"{u} {LANGS[k]}\n"
                                           for u, k in zip(utts, LABELS, strict=True)))
    scores_dir = root / "exp" / name
    metrics.write_scores(scores_dir / "scores.tsv", utts, LANGS, np.log(np.array(post)))
    if raw_post is not None:
        metrics.write_scores(scores_dir / "scores_raw.tsv", utts, LANGS,
                             np.log(np.array(raw_post)))
    return scores_dir, data


def test_conditions_table_combines_evaluated_sets(tmp_path, capsys):
    # "test": the reference vector (4 of 8 right), before calibration always "en" (2 of 8);
    # "test_noisy": every answer right, no raw scores.
    post = np.array(POSTERIORS) + 0.01
    always_en = [[.8, .1, .1]] * len(LABELS)
    right = [[.8 if j == k else .1 for j in range(3)] for k in LABELS]
    test, data_test = _hand_scored_set(tmp_path, "test", post, always_en)
    noisy, data_noisy = _hand_scored_set(tmp_path, "test_noisy", right)
    with pytest.raises(LreError, match=r"test/results.json: no such file"):
        evaluate.evaluate_conditions([test, noisy])
    res_test = evaluate.evaluate(test, data_test, plots=False)
    res_noisy = evaluate.evaluate(noisy, data_noisy, plots=False)
    assert res_test["accuracy"] == pytest.approx(0.5)
    assert res_test["raw"]["accuracy"] == pytest.approx(0.25)
    assert "raw" not in res_noisy
    assert "## Calibration" in (test / "report.md").read_text()

    rc = main(["evaluate", "--conditions", str(test), str(noisy)])
    assert rc == 0
    out = capsys.readouterr().out
    exp = tmp_path / "exp"
    assert f"report: {exp / 'report.md'}" in out
    combined = json.loads((exp / "results.json").read_text())
    assert list(combined["conditions"]) == ["test", "test_noisy"]
    entry = combined["conditions"]["test"]
    saved = json.loads((test / "results.json").read_text())
    assert entry["num_utts"] == saved["num_utts"] == 8
    for key in ("accuracy", "Cavg", "minCavg", "EER", "Cllr"):
        assert entry[key] == saved[key], key
        assert entry["raw"][key] == saved["raw"][key], key
    assert entry["report"] == "test/report.md"
    assert "raw" not in combined["conditions"]["test_noisy"]

    table = evaluate.conditions_table(combined)
    assert table == out[:len(table)]
    header, rule, row_test, row_noisy = table.splitlines()
    assert header.startswith("| condition | utts | accuracy (%) cal / raw | Cavg x100 cal / raw")
    assert row_test.startswith("| test | 8 | 50.00 / 25.00 | ")
    assert row_test.count(" / ") == 5
    assert row_noisy.startswith("| test_noisy | 8 | 100.00 | 0.00 | ")
    assert row_noisy.count(" / ") == 0
    md = (exp / "report.md").read_text()
    assert md.index(row_test) < md.index("## test\n") < md.index("## test_noisy\n")
    assert "[test/report.md](test/report.md)" in md
    assert "[test_noisy/report.md](test_noisy/report.md)" in md
    assert md.count("| language | utts |") == 2
    assert "| fi | 4 | 100.00 | 100.00 |" in md  # test_noisy: fi always right

    # elsewhere: the sets named by their paths; the same name twice is an error
    rc = main(["evaluate", "--conditions", str(test), str(noisy), "--out",
               str(tmp_path / "cmp")])
    assert rc == 0
    names = list(json.loads((tmp_path / "cmp" / "results.json").read_text())["conditions"])
    assert names == [str(test), str(noisy)]
    with pytest.raises(LreError, match="given twice"):
        evaluate.evaluate_conditions([test, test])
    assert main(["evaluate", "--conditions", str(test), "--data", str(data_test)]) == 1
    assert main(["evaluate", "--data", str(data_test)]) == 1


def test_conditions_compared_with_other_systems(tmp_path, capsys):
    """--compare: each system's figures per condition side by side, from their own
    combined results.json; a system without one is a one-line error."""
    right = [[.8 if j == k else .1 for j in range(3)] for k in LABELS]
    always_en = [[.8, .1, .1]] * len(LABELS)
    dirs = {}
    for system, post in (("fusion", right), ("hgru", always_en)):
        sets = []
        for cond in ("test", "test_noisy"):
            scores_dir, data = _hand_scored_set(tmp_path / system, cond, post)
            evaluate.evaluate(scores_dir, data, plots=False)
            sets.append(scores_dir)
        dirs[system] = tmp_path / system / "exp"
        if system == "hgru":
            evaluate.evaluate_conditions(sets)
        else:
            fusion_sets = sets
    with pytest.raises(LreError, match=r"nowhere/results.json: no conditions table"):
        evaluate.evaluate_conditions(fusion_sets, compare=[tmp_path / "nowhere"])
    rc = main(["evaluate", "--conditions", *map(str, fusion_sets), "--compare",
               str(dirs["hgru"])])
    assert rc == 0
    combined = json.loads((dirs["fusion"] / "results.json").read_text())
    assert list(combined["systems"]) == ["exp", str(dirs["hgru"])]  # same name: the path
    assert combined["systems"]["exp"]["test"]["accuracy"] == 1.0
    assert combined["systems"][str(dirs["hgru"])]["test_noisy"]["accuracy"] == 0.25
    md = (dirs["fusion"] / "report.md").read_text()
    assert "## Systems side by side" in md
    table = md[md.index("accuracy (%):"):]
    assert "| test | 100.00 | 25.00 |" in table and "| test_noisy | 100.00 | 25.00 |" in table
    assert "unknown EER" not in md.split("## test\n")[0]  # no open-set figures: no table
    assert "| test | 100.00 | 25.00 |" in capsys.readouterr().out
