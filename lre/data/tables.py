"""Kaldi tables: ``key value...`` text files, read strictly or leniently, written sorted.

Every table of a data dir (``wav.scp``, ``utt2lang``, ``segments``, ``feats.scp``, ...)
and every other keyed text file the toolkit reads or writes goes through this module:

- ``read_table`` / ``iter_table``: strict reading; a line without a value or a repeated
  key is an ``LreError`` naming ``file:line``.
- ``read_table_lines``: every raw line with its number and the problems of its form
  (invalid UTF-8, a DOS line ending), for ``lre validate`` which lists all problems at once.
- ``write_table`` / ``table_text``: ``key value`` lines sorted in C byte order
  (``LC_ALL=C sort``), written atomically.
- ``parse_ark_offset``: the one parser of Kaldi's ``archive.ark:offset[range]`` specifier.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from lre.utils import LreError, atomic_open

PathLike = str | os.PathLike

# Tables are read and written with surrogateescape so that ids in another encoding survive
# a read/write round trip byte for byte.
ENCODING = "utf-8"
ERRORS = "surrogateescape"


class TableLine(NamedTuple):
    """One parsed line of a table: its 1-based number, key and value (rest of the line)."""

    lineno: int
    key: str
    value: str


class RawLine(NamedTuple):
    """One line as it is in the file (line ending removed) and what is wrong with its form."""

    lineno: int
    text: str
    problems: tuple[str, ...]


class ArkOffset(NamedTuple):
    """A Kaldi ``archive.ark:offset`` specifier; ``range`` is the text inside ``[...]``."""

    ark: str
    offset: int
    range: str | None


_ARK_OFFSET = re.compile(r"^(?P<ark>.+):(?P<offset>\d+)(?:\[(?P<range>[^\]]*)\])?$")


def parse_ark_offset(spec: str) -> ArkOffset | None:
    """Split ``foo.ark:1234`` or ``foo.ark:1234[0:99]`` into its parts; None if not one."""
    match = _ARK_OFFSET.match(spec.strip())
    if match is None:
        return None
    return ArkOffset(match["ark"], int(match["offset"]), match["range"])


def c_sort_key(key: str) -> bytes:
    """Sort key that orders strings as ``LC_ALL=C sort`` does (by UTF-8 bytes)."""
    return key.encode(ENCODING, ERRORS)


def c_sorted(keys: Iterable[str]) -> list[str]:
    """``keys`` sorted in C byte order."""
    return sorted(keys, key=c_sort_key)


def format_number(value: float) -> str:
    """Shortest plain decimal for a time or duration (at most 6 decimals, no exponent)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_value(value: object) -> str:
    """A table value as text: floats as plain decimals, sequences joined by spaces."""
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return " ".join(format_value(v) for v in value)
    return str(value)


def _read_text(path: Path) -> str:
    try:
        with open(path, encoding=ENCODING, errors=ERRORS) as f:
            return f.read()
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LreError(f"{path}: is a directory, expected a file") from None


def iter_table(
    path: PathLike, require_value: bool = True, unique: bool = True
) -> Iterator[TableLine]:
    """``TableLine`` of each non-blank line of ``path``, in file order.

    The key is the first token, the value the rest of the line, stripped. Raises
    ``LreError`` naming ``file:line`` for a line without a value (when ``require_value``;
    otherwise its value is ``""``) and for a repeated key (when ``unique``).
    """
    path = Path(path)
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) < 2 and require_value:
            raise LreError(f"{path}:{lineno}: malformed line (expected 'key value'): {line!r}")
        key = parts[0]
        if unique:
            if key in first_line:
                raise LreError(
                    f"{path}:{lineno}: duplicate id '{key}' (first on line {first_line[key]})"
                )
            first_line[key] = lineno
        yield TableLine(lineno, key, parts[1].strip() if len(parts) > 1 else "")


def read_table(path: PathLike, require_value: bool = True) -> dict[str, str]:
    """Read a Kaldi ``key value...`` file into ``{key: value}`` (value: rest of the line).

    Blank lines are skipped. A line with no value (when ``require_value``) or a repeated
    key raises ``LreError`` naming the file and line.
    """
    return {line.key: line.value for line in iter_table(path, require_value)}


def read_table_lines(path: PathLike) -> list[RawLine]:
    """Every line of ``path`` (blank ones too) with the problems of its form.

    Reports lines that are not valid UTF-8 (decoded with surrogateescape) and lines that
    end with a carriage return (which is removed). An empty file gives ``[]``.
    """
    data = Path(path).read_bytes()
    raw_lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        raw_lines.pop()  # the end of the last line, not an empty line
    out = []
    for lineno, raw in enumerate(raw_lines, 1):
        problems = []
        try:
            text = raw.decode(ENCODING)
        except UnicodeDecodeError:
            problems.append("line is not valid UTF-8")
            text = raw.decode(ENCODING, ERRORS)
        if text.endswith("\r"):
            problems.append("line ends with a carriage return (DOS line ending)")
            text = text.rstrip("\r")
        out.append(RawLine(lineno, text, tuple(problems)))
    return out


def table_text(mapping: Mapping[str, object], path: PathLike | None = None) -> str:
    """``mapping`` as ``key value`` lines sorted in C byte order.

    Keys must be non-empty and free of whitespace, values free of line breaks; ``path``
    only names the file in the error.
    """
    where = "table" if path is None else str(path)
    lines = []
    for key in c_sorted(mapping):
        if not key or key.split() != [key]:
            raise LreError(f"{where}: invalid id {key!r} (ids must be non-empty, no whitespace)")
        value = format_value(mapping[key])
        if "\n" in value or "\r" in value:
            raise LreError(f"{where}: value for '{key}' contains a line break")
        lines.append(f"{key} {value}\n")
    return "".join(lines)


def write_text(path: PathLike, text: str) -> None:
    """Write table text atomically, keeping ids that are not valid UTF-8 byte for byte."""
    with atomic_open(path, "w", encoding=ENCODING, errors=ERRORS) as f:
        f.write(text)


def write_table(path: PathLike, mapping: Mapping[str, object]) -> None:
    """Write ``mapping`` as ``key value`` lines sorted in C byte order, atomically.

    Values may be strings, numbers (floats are written as plain decimals) or sequences
    (joined by spaces). A bad key or value raises ``LreError`` and leaves an existing
    file untouched.
    """
    write_text(path, table_text(mapping, path))


__all__ = [
    "ArkOffset",
    "RawLine",
    "TableLine",
    "c_sort_key",
    "c_sorted",
    "format_number",
    "format_value",
    "iter_table",
    "parse_ark_offset",
    "read_table",
    "read_table_lines",
    "table_text",
    "write_table",
    "write_text",
]
