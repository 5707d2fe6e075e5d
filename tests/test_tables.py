"""Kaldi tables: strict and lenient reading, sorted atomic writing, ark:offset specifiers."""

from __future__ import annotations

import os
import subprocess

import pytest

from lre.data.tables import (
    ArkOffset,
    TableLine,
    c_sorted,
    iter_table,
    parse_ark_offset,
    read_table,
    read_table_lines,
    table_text,
    write_table,
)
from lre.utils import LreError


def test_round_trip_keeps_values_and_formats_numbers(tmp_path):
    path = tmp_path / "utt2x"
    write_table(path, {"b": "two words", "a": 1.5, "c": ("r1", 0.0, 2.25), "d": 7})
    assert path.read_text("utf-8") == "a 1.5\nb two words\nc r1 0 2.25\nd 7\n"
    assert read_table(path) == {"a": "1.5", "b": "two words", "c": "r1 0 2.25", "d": "7"}


def test_value_is_rest_of_line_stripped_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "wav.scp"
    path.write_text("  u1   sox a.wav -t wav - |  \n\nu2\tb.wav\n", "utf-8")
    assert read_table(path) == {"u1": "sox a.wav -t wav - |", "u2": "b.wav"}
    assert list(iter_table(path)) == [TableLine(1, "u1", "sox a.wav -t wav - |"),
                                      TableLine(3, "u2", "b.wav")]


def test_write_is_lc_all_c_order_with_non_ascii_ids(tmp_path):
    ids = ["ö-1", "a-1", "Z-1", "é-2", "a_1", "日本-3", "A-1", "z-1", "a-10", "a-2"]
    path = tmp_path / "utt2lang"
    write_table(path, {u: "xx" for u in ids})
    keys = [line.split()[0] for line in path.read_text("utf-8").splitlines()]
    expected = subprocess.run(["sort"], input="\n".join(ids) + "\n", capture_output=True,
                              text=True, encoding="utf-8", env={**os.environ, "LC_ALL": "C"},
                              check=True).stdout.split()
    assert keys == expected == c_sorted(ids)
    assert keys.index("Z-1") < keys.index("a-1") < keys.index("é-2") < keys.index("日本-3")


def test_ids_in_another_encoding_survive_byte_for_byte(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_bytes(b"caf\xe9 s1\nab s2\n")  # Latin-1 id
    table = read_table(path)
    write_table(tmp_path / "out", table)
    assert (tmp_path / "out").read_bytes() == b"ab s2\ncaf\xe9 s1\n"


def test_line_without_value_named_by_file_and_line(tmp_path):
    path = tmp_path / "utt2lang"
    path.write_text("u1 en\nu2\n", "utf-8")
    with pytest.raises(LreError, match=rf"^{path}:2: malformed line"):
        read_table(path)
    assert read_table(path, require_value=False) == {"u1": "en", "u2": ""}


def test_duplicate_key_names_both_lines(tmp_path):
    path = tmp_path / "utt2lang"
    path.write_text("u1 en\nu2 fi\nu1 de\n", "utf-8")
    with pytest.raises(LreError, match=rf"^{path}:3: duplicate id 'u1' \(first on line 1\)"):
        read_table(path)
    lines = list(iter_table(path, unique=False))
    assert [line.value for line in lines] == ["en", "fi", "de"]


def test_missing_file_and_directory_are_errors(tmp_path):
    with pytest.raises(LreError, match="file not found"):
        read_table(tmp_path / "nope")
    with pytest.raises(LreError, match="is a directory"):
        read_table(tmp_path)


def test_raw_lines_report_bad_utf8_and_dos_endings(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"a 1\r\nb \xff\n\nc 3")
    lines = read_table_lines(path)
    assert [(raw.lineno, raw.text) for raw in lines] == [(1, "a 1"), (2, "b \udcff"), (3, ""),
                                                         (4, "c 3")]
    assert lines[0].problems == ("line ends with a carriage return (DOS line ending)",)
    assert lines[1].problems == ("line is not valid UTF-8",)
    assert lines[2].problems == lines[3].problems == ()
    (tmp_path / "empty").write_bytes(b"")
    assert read_table_lines(tmp_path / "empty") == []


@pytest.mark.parametrize(("spec", "expected"), [
    ("feats.ark:12", ArkOffset("feats.ark", 12, None)),
    ("/exp/raw_fbank.1.ark:0", ArkOffset("/exp/raw_fbank.1.ark", 0, None)),
    ("d:/a.ark:345[0:99]", ArkOffset("d:/a.ark", 345, "0:99")),
    ("a.ark:7[3:9,0:12]", ArkOffset("a.ark", 7, "3:9,0:12")),
    ("a.ark:7[]", ArkOffset("a.ark", 7, "")),
    ("audio.wav", None),
    ("a.ark:", None),
    ("a.ark:12x", None),
    ("sox a.wav -t wav - |", None),
])
def test_parse_ark_offset(spec, expected):
    assert parse_ark_offset(spec) == expected


def test_bad_key_or_value_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(LreError, match=r"out: invalid id 'a b'"):
        write_table(tmp_path / "out", {"a b": "x"})
    with pytest.raises(LreError, match="value for 'a' contains a line break"):
        table_text({"a": "x\ny"})


def test_failing_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "utt2lang"
    write_table(path, {"u1": "en"})
    before = path.read_bytes()

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot format")

    with pytest.raises(LreError):
        write_table(path, {"u1": "fi", "u 2": "de"})
    with pytest.raises(RuntimeError):
        write_table(path, {"u1": "fi", "u2": Unprintable()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utt2lang"]  # no temp file left


def test_interrupted_write_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "wav.scp"
    write_table(path, {"u1": "a.wav"})
    before = path.read_bytes()

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        write_table(path, {"u1": "b.wav", "u2": "c.wav"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wav.scp"]
