"""Real text for the synthetic corpus: Django's translation catalogs, one pool per language.

Django (BSD-3-Clause) ships its user-interface messages translated into ~100 languages
by its translator community, as gettext ``.po`` catalogs inside the installed package:
``django/conf/locale/<locale>/LC_MESSAGES/django.po`` and the same under each
``django/contrib/<app>/locale/``. English text is the catalogs' ``msgid``s; every other
language is the ``msgstr``s of its catalogs. Entries that cannot be read aloud as plain
sentences (format placeholders, HTML, URLs, code identifiers), fuzzy or untranslated
entries, and very short or very long ones are dropped.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from lre.utils import LreError

logger = logging.getLogger(__name__)

MIN_CHARS = 12  # shorter entries are mostly single words (menu labels, month names)
MIN_WORDS = 2
MAX_CHARS = 150  # keeps one phrase well under the 12 s utterance limit at the slowest rate

# printf-style (%s, %(name)s, %d, %%) and str.format-style ({0}, {name}) placeholders.
_PLACEHOLDER = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[a-zA-Z%]|\{[^}]*\}")
# Markup, URLs, e-mail addresses, file paths and code identifiers: not plain speech.
_NOT_SPEECH = re.compile(r"[<>&@/\\_=|`#*\[\]^~$]|https?:|www\.|\.\w{2,4}\b(?!\s)")
_TRAILING_JUNK = re.compile(r"[\s:;,\-–—…·]+$|\.\.\.$")
_SPACES = re.compile(r"\s+")
_QUOTES = re.compile(r"[\"“”„«»‹›]|(?<!\w)['‘’‚]|['‘’‚](?!\w)")
_SPACE_BEFORE_COMMA = re.compile(r"\s+([,.])")
_INVISIBLE = re.compile(r"[\u200b\u200e\u200f\ufeff\u00ad]")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r", "a": "", "b": "", "f": ""}


@dataclass
class PoEntry:
    """One catalog entry: the English source text(s) and its translation(s)."""

    msgid: str = ""
    msgid_plural: str | None = None
    msgstr: list[str] = field(default_factory=list)
    msgctxt: str | None = None
    fuzzy: bool = False
    obsolete: bool = False


def _unquote(token: str, path: Path, lineno: int) -> str:
    token = token.strip()
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise LreError(f"{path}:{lineno}: expected a quoted string, got {token[:40]!r}")
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def parse_po(path: str | Path) -> list[PoEntry]:
    """Parse a gettext ``.po`` file into its entries (the header entry included).

    Handles ``msgctxt``, ``msgid_plural``/``msgstr[N]``, multi-line strings, the
    ``#, fuzzy`` flag and obsolete ``#~`` entries (marked, not dropped).
    """
    path = Path(path)
    entries: list[PoEntry] = []
    entry = PoEntry()
    started = False
    target: tuple[str, int] | None = None  # (field, plural index) continuation lines extend

    def flush() -> None:
        nonlocal entry, started, target
        if started:
            entries.append(entry)
        entry, started, target = PoEntry(), False, None

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LreError(f"{path}: cannot read catalog: {e}") from None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            flush()
            continue
        if line.startswith("#") or line.startswith(("msgctxt ", "msgid ")):
            if started and entry.msgstr:
                flush()  # a comment or new msgid after a complete entry starts the next one
        if line.startswith("#~"):
            entry.obsolete = started = True
            continue
        if line.startswith("#"):
            if line.startswith("#,") and "fuzzy" in [f.strip() for f in line[2:].split(",")]:
                entry.fuzzy = True
            continue
        keyword, _, rest = line.partition(" ")
        if line.startswith('"'):
            if target is None:
                raise LreError(f"{path}:{lineno}: string continuation outside an entry")
            text = _unquote(line, path, lineno)
            name, index = target
            if name == "msgstr":
                entry.msgstr[index] += text
            else:
                setattr(entry, name, (getattr(entry, name) or "") + text)
            continue
        started = True
        if keyword == "msgctxt":
            entry.msgctxt = _unquote(rest, path, lineno)
            target = ("msgctxt", 0)
        elif keyword == "msgid":
            entry.msgid = _unquote(rest, path, lineno)
            target = ("msgid", 0)
        elif keyword == "msgid_plural":
            entry.msgid_plural = _unquote(rest, path, lineno)
            target = ("msgid_plural", 0)
        elif keyword == "msgstr" or keyword.startswith("msgstr["):
            try:
                index = 0 if keyword == "msgstr" else int(keyword[7:-1])
            except ValueError:
                raise LreError(f"{path}:{lineno}: bad plural index {keyword!r}") from None
            while len(entry.msgstr) <= index:
                entry.msgstr.append("")
            entry.msgstr[index] = _unquote(rest, path, lineno)
            target = ("msgstr", index)
        else:
            raise LreError(f"{path}:{lineno}: unknown keyword {keyword!r}")
    flush()
    return entries


def clean_phrase(text: str) -> str | None:
    """Normalise one catalog string for reading aloud; ``None`` when it is not speakable.

    Drops strings with placeholders, markup, URLs or code; collapses white space; strips
    trailing colons, dashes and ellipses; rejects strings shorter than ``MIN_CHARS`` /
    ``MIN_WORDS`` words, longer than ``MAX_CHARS``, or with no letters.
    """
    text = unicodedata.normalize("NFC", text)
    if _PLACEHOLDER.search(text) or _NOT_SPEECH.search(text):
        return None
    # Quotation marks are not spoken and often end up unbalanced once trimmed.
    text = _QUOTES.sub("", _INVISIBLE.sub("", text))
    text = _SPACES.sub(" ", text).strip().lstrip("-–— ")
    text = _SPACE_BEFORE_COMMA.sub(r"\1", text)
    previous = None
    while previous != text:
        previous = text
        text = _TRAILING_JUNK.sub("", text).strip()
    if len(text) < MIN_CHARS or len(text) > MAX_CHARS or len(text.split()) < MIN_WORDS:
        return None
    letters = sum(ch.isalpha() for ch in text)
    if letters < 0.6 * len(text.replace(" ", "")):
        return None
    return text


def django_locale_root() -> Path:
    """The installed Django package directory (raises a clear error when it is missing)."""
    try:
        import django
    except ImportError:
        raise LreError(
            "django is not installed: the synthetic corpus reads its text from Django's "
            "translation catalogs (pip install 'django==5.2.19', or tools/setup.sh)"
        ) from None
    return Path(django.__file__).parent


def catalog_files(locale: str, root: Path | None = None) -> list[Path]:
    """All ``.po`` catalogs of ``locale`` in the Django package, in a fixed (sorted) order."""
    root = django_locale_root() if root is None else root
    files = sorted(root.glob(f"conf/locale/{locale}/LC_MESSAGES/*.po"))
    files += sorted(root.glob(f"contrib/*/locale/{locale}/LC_MESSAGES/*.po"))
    return files


def django_version() -> str:
    """Version string of the installed Django (the text source of the synthetic corpus)."""
    django_locale_root()
    import django

    return django.get_version()


def load_phrases(locale: str, english: bool = False, root: Path | None = None) -> list[str]:
    """The speakable phrases of one Django locale, deduplicated and sorted.

    ``english=True`` takes the ``msgid``s (source strings) instead of the translations;
    use it with ``locale="en"``. Untranslated entries (empty, or equal to the English
    source apart from case) are dropped so that no English leaks into another language.
    """
    files = catalog_files(locale, root)
    if not files:
        raise LreError(f"django locale '{locale}': no .po catalogs found in {root or 'django'}")
    phrases: set[str] = set()
    for path in files:
        for entry in parse_po(path):
            if entry.fuzzy or entry.obsolete or not entry.msgid:
                continue
            if english:
                candidates = [entry.msgid] + ([entry.msgid_plural] if entry.msgid_plural else [])
            else:
                sources = {entry.msgid.casefold(), (entry.msgid_plural or "").casefold()}
                candidates = [s for s in entry.msgstr[:1] if s and s.casefold() not in sources]
            for text in candidates:
                cleaned = clean_phrase(text)
                if cleaned is not None:
                    phrases.add(cleaned)
    return sorted(phrases)
