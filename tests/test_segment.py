"""The language-turn decoder, RTTM and the segmentation metrics on hand-made numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lre.inference.records import ResultRecord, Segment, Turn
from lre.segmentation import DecoderOptions, decode_turns, read_rttm, record_turns, write_rttm
from lre.segmentation.decoder import _centres, merge_gaps, speech_regions, viterbi_languages
from lre.segmentation.scoring import (
    boundary_errors,
    error_components,
    identification_error,
    segmentation_metrics,
    single_language,
)
from lre.utils import LreError

LANGS = ["en", "fi"]


def grid(k: int, shift_after: int | None = None, gap: float = 0.0
         ) -> tuple[np.ndarray, np.ndarray]:
    """Segment spans of 1 s hop and 1.1 s span; from segment ``shift_after`` on, ``gap``
    seconds later (a pause VAD removed: the segment before it stretches over the pause)."""
    starts = np.arange(k, dtype=float)
    ends = starts + 1.1
    if shift_after is not None:
        starts[shift_after:] += gap
        ends[shift_after - 1:] += gap
    return starts, ends


def two_languages(k: int, switch: int, p: float = 0.9) -> np.ndarray:
    post = np.full((k, 2), 1 - p)
    post[:switch, 0] = p
    post[switch:, 1] = p
    return post


def spans(turns: list[Turn]) -> list[tuple[float, float, str]]:
    return [(round(t.start, 3), round(t.end, 3), t.language) for t in turns]


# ----------------------------------------------------------------------------------------
# decoder
# ----------------------------------------------------------------------------------------


def test_clean_switch_lies_halfway_between_the_segments():
    starts, ends = grid(10)
    turns = decode_turns(two_languages(10, 5), LANGS, starts, ends,
                         options=DecoderOptions(refine="none"))
    # centres 4.55 and 5.55 -> 5.05; the turns span the segments' speech 0-10.1
    assert spans(turns) == [(0.0, 5.05, "en"), (5.05, 10.1, "fi")]
    assert [round(t.confidence, 6) for t in turns] == [0.9, 0.9]


def test_segment_centres_skip_the_pauses_inside_them():
    starts, ends = np.array([0.0, 1.0, 2.0, 5.0]), np.array([1.1, 2.1, 3.1, 6.1])
    speech = np.array([[0.0, 0.3], [0.9, 2.0], [2.5, 2.6], [4.0, 4.5]])
    # 0-1.1: speech 0-0.3 and 0.9-1.1 (0.5 s), half of it (0.25) reached at 0.25;
    # 1-2.1: speech 1.0-2.0, its middle 1.5; 2-3.1: speech 2.0-2.0 (none) and 2.5-2.6,
    # middle 2.55; 5-6.1: no speech, the segment's middle 5.55
    np.testing.assert_allclose(_centres(starts, ends, speech), [0.25, 1.5, 2.55, 5.55])
    np.testing.assert_allclose(_centres(starts, ends, None), (starts + ends) / 2)


def test_one_segment_blip_is_removed_by_the_minimum_turn():
    starts, ends = grid(10)
    post = two_languages(10, 5)
    post[2] = [0.1, 0.9]
    # A small penalty alone keeps the blip: 2 x 0.5 + log(1/0.9) < log(1/0.1).
    loose = DecoderOptions(switch_penalty=0.5, min_turn=0.0, refine="none")
    assert [t.language for t in decode_turns(post, LANGS, starts, ends, options=loose)] == \
        ["en", "fi", "en", "fi"]
    strict = DecoderOptions(switch_penalty=0.5, min_turn=2.0, refine="none")
    turns = decode_turns(post, LANGS, starts, ends, options=strict)
    assert spans(turns) == [(0.0, 5.05, "en"), (5.05, 10.1, "fi")]
    assert turns[0].confidence == pytest.approx((4 * 0.9 + 0.1) / 5)


def test_a_blip_at_the_end_is_a_turn_too_short_as_well():
    starts, ends = grid(6)
    post = two_languages(6, 5)  # only the last segment is fi
    opts = DecoderOptions(switch_penalty=0.5, min_turn=2.0)
    assert [t.language for t in decode_turns(post, LANGS, starts, ends, options=opts)] == ["en"]
    one = decode_turns(post[:1], LANGS, starts[:1], ends[:1], options=opts)  # shorter than D
    assert spans(one) == [(0.0, 1.1, "en")]


def test_silence_between_turns_is_no_turn():
    # Speech 0-5.0 and 5.8-10.9: segment 4 covers 4.0-5.0 and 5.8-5.9.
    starts, ends = grid(10, shift_after=5, gap=0.8)
    speech = np.array([[0.0, 5.0], [5.8, 10.9]])
    turns = decode_turns(two_languages(10, 5), LANGS, starts, ends, speech)
    assert spans(turns) == [(0.0, 5.0, "en"), (5.8, 10.9, "fi")]
    # One language: the pause (0.8 s >= min_gap) still ends a turn ...
    same = decode_turns(two_languages(10, 10), LANGS, starts, ends, speech)
    assert spans(same) == [(0.0, 5.0, "en"), (5.8, 10.9, "en")]
    # ... but a shorter pause is bridged.
    bridged = decode_turns(two_languages(10, 10), LANGS, starts, ends, speech,
                           DecoderOptions(min_gap=1.0))
    assert spans(bridged) == [(0.0, 10.9, "en")]


def test_interpolation_moves_the_switch_towards_the_mixed_segment():
    starts, ends = grid(10)
    post = two_languages(10, 5)
    post[4] = [0.6, 0.4]  # segment 4 (centre 4.55) holds some fi
    # p_en - p_fi: +0.2 at 4.55, -0.8 at 5.55 -> zero at 4.55 + 0.2 / 1.0 = 4.75
    turns = decode_turns(post, LANGS, starts, ends, options=DecoderOptions(refine="interpolate"))
    assert spans(turns) == [(0.0, 4.75, "en"), (4.75, 10.1, "fi")]
    plain = decode_turns(post, LANGS, starts, ends, options=DecoderOptions(refine="none"))
    assert spans(plain)[0] == (0.0, 5.05, "en")


def _path_score(e: np.ndarray, path: tuple[int, ...], penalty: float, d: int,
                mono: float = 0.0) -> float:
    runs = [len(list(g)) for _, g in itertools.groupby(path)]
    if len(runs) > 1 and min(runs) < d:
        return -np.inf
    return float(sum(e[k, p] for k, p in enumerate(path)) - penalty * (len(runs) - 1)
                 - (mono if len(runs) > 1 else 0.0))


@pytest.mark.parametrize("seed", range(8))
def test_viterbi_finds_the_best_allowed_path(seed):
    """Against every path of 7 segments over 3 languages (with and without the cost of a
    recording's switching at all)."""
    rng = np.random.default_rng(seed)
    e = np.log(rng.dirichlet(np.ones(3) * 0.5, size=7))
    penalty, d = float(rng.uniform(0, 2)), int(rng.integers(1, 4))
    mono = float(rng.uniform(0, 4)) if seed % 2 else 0.0
    best = max(itertools.product(range(3), repeat=7),
               key=lambda p: _path_score(e, p, penalty, d, mono))
    found = tuple(viterbi_languages(e, penalty, d, mono).tolist())
    assert _path_score(e, found, penalty, d, mono) == pytest.approx(
        _path_score(e, best, penalty, d, mono))


def test_mono_penalty_is_paid_once():
    """A recording whose excursion to a second language gains 3 nats net of its two
    switches: a mono penalty of 5 keeps it in one language; 1 does not (and is paid once,
    not per switch: 2 x 1 would still leave 1 nat)."""
    e = np.log(np.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] * 3 + [[0.9, 0.1]] * 3))
    gain = 3 * (np.log(0.9) - np.log(0.1))                      # 6.6 nats a middle run
    pen = (gain - 3.0) / 2                                      # two switches cost gain - 3
    assert viterbi_languages(e, pen, 1, mono_penalty=5.0).tolist() == [0] * 9
    assert viterbi_languages(e, pen, 1, mono_penalty=2.5).tolist() == [0] * 3 + [1] * 3 + [0] * 3


def test_speech_regions_of_a_vad_decision():
    vad = np.zeros(100, dtype=bool)
    vad[10:40] = vad[41:50] = vad[80:100] = True  # a 1-frame hole is covered by the window
    regions = speech_regions(vad, 0.01, 0.025)
    np.testing.assert_allclose(regions, [[0.10, 0.515], [0.80, 1.015]])
    np.testing.assert_allclose(merge_gaps(regions, 0.3), [[0.10, 1.015]])


def test_record_turns_need_a_timeline():
    segs = [Segment(0.0, 1.1, 0.5, {"en": 0.9, "fi": 0.1}),
            Segment(1.0, 2.1, 0.5, {"en": 0.8, "fi": 0.2})]
    record = ResultRecord("r", "en", {"en": 0.9, "fi": 0.1}, segs)
    assert spans(record_turns(record)) == [(0.0, 2.1, "en")]
    record.segments[0].posteriors = None
    with pytest.raises(LreError, match="'r': its segments have no posteriors"):
        record_turns(record)
    with pytest.raises(LreError, match="refine: unknown 'cubic'"):
        decode_turns(np.ones((1, 1)), ["en"], [0.0], [1.0], options=DecoderOptions(refine="cubic"))


def test_turns_round_trip_through_the_record():
    record = ResultRecord("r", "en", {"en": 1.0}, [Segment(0.0, 1.1, 1.0)],
                          turns=[Turn(0.0, 1.1, "en", 0.93)])
    again = ResultRecord.from_dict(record.to_dict())
    assert again.turns == [Turn(0.0, 1.1, "en", 0.93)]
    assert "turns" not in ResultRecord("r", "en", {"en": 1.0}).to_dict()


# ----------------------------------------------------------------------------------------
# RTTM
# ----------------------------------------------------------------------------------------


def test_rttm_round_trip_and_errors(tmp_path):
    turns = {"reco 1": [Turn(0.0, 4.25, "en"), Turn(4.8, 9.125, "fi")], "b": [Turn(1, 2, "ru")]}
    path = tmp_path / "x.rttm"
    write_rttm(path, turns)
    lines = path.read_text().splitlines()
    assert lines[0] == "SPEAKER reco_1 1 0.000 4.250 <NA> <NA> en <NA> <NA>"
    back = read_rttm(path)
    assert {k: spans(v) for k, v in back.items()} == {
        "reco_1": [(0.0, 4.25, "en"), (4.8, 9.125, "fi")], "b": [(1.0, 2.0, "ru")]}
    path.write_text("SPKR-INFO x 1 <NA> <NA> <NA> unknown en <NA>\n"
                    "SPEAKER x 1 0.5 abc <NA> <NA> en <NA> <NA>\n")
    with pytest.raises(LreError, match=r"x\.rttm:2: duration 'abc' is not a number"):
        read_rttm(path)
    path.write_text("SPEAKER x 1 0.5\n")
    with pytest.raises(LreError, match=r"x\.rttm:1: a SPEAKER line needs at least 8 fields"):
        read_rttm(path)


# ----------------------------------------------------------------------------------------
# metrics, computed by hand
# ----------------------------------------------------------------------------------------

REF = {"f": [Turn(0, 4, "en"), Turn(4, 10, "fi")], "g": [Turn(0, 5, "en")],
       "h": [Turn(0, 3, "fi")]}
HYP = {"f": [Turn(0, 5, "en"), Turn(5, 9, "fi"), Turn(9.5, 11, "fi")],
       "g": [Turn(0, 2, "en"), Turn(2, 5, "fi")], "h": [Turn(0, 3, "fi")]}


def test_identification_error_by_hand():
    # f: 4-5 confused (1 s), 9-9.5 missed, 10-11 false alarm, out of 10 s of reference.
    c = error_components(REF["f"], HYP["f"])
    assert (c["reference"], c["confusion"], c["missed"], c["false_alarm"], c["correct"]) == \
        pytest.approx((10, 1, 0.5, 1, 8.5))
    assert identification_error(REF, HYP, ["f"])["IER"] == pytest.approx(0.25)
    # A 0.25 s collar around 0, 4 and 10 leaves 9 s of reference, 0.75 s confused, 0.5 s
    # missed and 0.75 s false alarm.
    f = identification_error(REF, HYP, ["f"], collar=0.25)
    assert (f["reference_seconds"], f["confusion_seconds"], f["missed_seconds"],
            f["false_alarm_seconds"]) == pytest.approx((9, 0.75, 0.5, 0.75))
    assert f["IER"] == pytest.approx(2 / 9)
    # All three: g adds 3 s confused of 5, h is right: (2.5 + 3) / 18.
    assert identification_error(REF, HYP)["IER"] == pytest.approx(5.5 / 18)
    # A recording the hypothesis lacks is all missed.
    assert identification_error(REF, {}, ["h"])["missed"] == 1.0


def test_overlapping_labels_count_like_pyannote():
    ref = [Turn(0, 2, "en"), Turn(1, 2, "fi")]
    hyp = [Turn(0, 2, "en")]
    c = error_components(ref, hyp)
    # 1-2: two reference labels, one hypothesis label (right): 1 s missed, none confused.
    assert (c["reference"], c["missed"], c["confusion"]) == pytest.approx((3, 1, 0))


def test_boundary_errors_and_single_language_by_hand():
    b = boundary_errors(REF, HYP)
    # f: the switch at 4 found at 5; g has no reference switch; fi -> fi is no switch.
    assert (b["median"], b["p90"], b["reference_switches"], b["detected_switches"]) == \
        (1.0, 1.0, 1, 2)
    # A detected switch inside the reference pause is exact.
    paused = {"p": [Turn(0, 4, "en"), Turn(4.6, 8, "fi")]}
    assert boundary_errors(paused, {"p": [Turn(0, 4.3, "en"), Turn(4.3, 8, "fi")]})[
        "median"] == 0.0
    none = boundary_errors(paused, {"p": [Turn(0, 8, "en")]})
    assert none["in_recordings_without_detected_switch"] == 1 and np.isnan(none["median"])
    s = single_language(REF, HYP)
    assert (s["recordings"], s["one_language"], s["one_language_right"]) == (2, 0.5, 0.5)
    m = segmentation_metrics(REF, HYP, collar=0.0)
    assert m["IER"] == m["IER_no_collar"] == pytest.approx(5.5 / 18)
    assert m["recordings"] == 3
