"""Language turns as RTTM (NIST's Rich Transcription Time Marked format).

One line per turn, the language in the speaker-name field::

    SPEAKER <file> 1 <start> <duration> <NA> <NA> <language> <NA> <NA>

Fields are separated by white space, so a file id holds none (:func:`rttm_id`). Readers
that take RTTM for speaker diarization (pyannote, dscore, md-eval) read these files as they
are, with languages as speaker labels.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from lre.inference.records import Turn
from lre.utils import LreError, atomic_open

PathLike = str | os.PathLike

_SPACE = re.compile(r"\s+")


def rttm_id(name: str) -> str:
    """A file id for RTTM: ``name`` with every run of white space turned into ``_``."""
    return _SPACE.sub("_", name.strip()) or "_"


def format_rttm(file_id: str, turns: Iterable[Turn]) -> str:
    """The RTTM lines of one file's turns (times to the millisecond)."""
    fid = rttm_id(file_id)
    return "".join(f"SPEAKER {fid} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                   f"{rttm_id(t.language)} <NA> <NA>\n" for t in turns)


def write_rttm(path: PathLike | None, turns: Mapping[str, Iterable[Turn]], out=None) -> None:
    """Write ``{file id: turns}`` as RTTM to ``path`` atomically (files in the order given),
    or to the stream ``out`` when ``path`` is None or ``-``."""
    text = "".join(format_rttm(fid, ts) for fid, ts in turns.items())
    if path is None or str(path) == "-":
        if out is None:
            raise LreError("write_rttm: no path and no stream")
        out.write(text)
        return
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _field(value: str, where: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise LreError(f"{where}: {what} '{value}' is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise LreError(f"{where}: {what} {value} must be a finite number >= 0")
    return x


def read_rttm(path: PathLike) -> dict[str, list[Turn]]:
    """``{file id: turns sorted by start}`` of the ``SPEAKER`` lines of an RTTM file.

    Blank lines, ``#`` comments and other line types (``SPKR-INFO``, ...) are skipped.

    Raises:
        LreError: ``path:line: <problem>`` for a malformed ``SPEAKER`` line, or a missing file.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LreError(f"{path}: cannot read ({e})") from None
    out: dict[str, list[Turn]] = {}
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[0] != "SPEAKER":
            continue
        where = f"{path}:{lineno}"
        if len(fields) < 8:
            raise LreError(f"{where}: a SPEAKER line needs at least 8 fields "
                           f"(type file channel start duration ortho stype name), "
                           f"got {len(fields)}")
        start = _field(fields[3], where, "start")
        duration = _field(fields[4], where, "duration")
        conf = 1.0
        if len(fields) > 8 and fields[8] != "<NA>":
            conf = _field(fields[8], where, "confidence")
        out.setdefault(fields[1], []).append(Turn(start, start + duration, fields[7], conf))
    for turns in out.values():
        turns.sort(key=lambda t: (t.start, t.end))
    return out
