"""Language codes: their English names for people, and subsets of a model's languages.

Labels are any strings; recipes use ISO 639-1 codes, and ISO 639-3 ones where a language has
no two-letter code (``ceb``, ``haw``, ``yue``), sometimes with a region or script subtag
(``pt-BR``, ``zh_TW``). :func:`language_name` gives the English name of those (``fi`` ->
``Finnish``, ``pt-BR`` -> ``Portuguese (BR)``) and the label itself for anything else.
Files and JSON keep the codes; names are only for what a person reads.

A *subset* (``--langs en,de,fr``) asks which of those languages is spoken, knowing it is
one of them: the posteriors of the subset renormalised to sum to 1
(``P(l | x, l in S) = P(l | x) / sum_{k in S} P(k | x)``), computed from the posteriors
over all the model's languages after calibration.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lre.utils import LreError

#: The label of a model's rejection class: training utterances labelled ``other`` (speech in
#: none of the corpus's languages) train one more output, which inference keeps apart from
#: the languages (:class:`lre.inference.runner.OtherClassRunner`) as an open-set score.
OTHER = "other"

#: ISO 639-1 codes, the codes older corpora use for some of them (``iw``, ``jw``, ``in``,
#: ``ji``, ``mo``), and ISO 639-3 codes of languages found in LID corpora (VoxLingua107,
#: Common Voice, FLEURS) that have no 639-1 code.
NAMES: dict[str, str] = {
    "aa": "Afar", "ab": "Abkhazian", "ae": "Avestan", "af": "Afrikaans", "ak": "Akan",
    "am": "Amharic", "an": "Aragonese", "ar": "Arabic", "as": "Assamese", "av": "Avaric",
    "ay": "Aymara", "az": "Azerbaijani", "ba": "Bashkir", "be": "Belarusian",
    "bg": "Bulgarian", "bi": "Bislama", "bm": "Bambara", "bn": "Bengali", "bo": "Tibetan",
    "br": "Breton", "bs": "Bosnian", "ca": "Catalan", "ce": "Chechen", "ch": "Chamorro",
    "co": "Corsican", "cr": "Cree", "cs": "Czech", "cu": "Church Slavic", "cv": "Chuvash",
    "cy": "Welsh", "da": "Danish", "de": "German", "dv": "Dhivehi", "dz": "Dzongkha",
    "ee": "Ewe", "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish",
    "et": "Estonian", "eu": "Basque", "fa": "Persian", "ff": "Fulah", "fi": "Finnish",
    "fj": "Fijian", "fo": "Faroese", "fr": "French", "fy": "Western Frisian", "ga": "Irish",
    "gd": "Scottish Gaelic", "gl": "Galician", "gn": "Guarani", "gu": "Gujarati",
    "gv": "Manx", "ha": "Hausa", "he": "Hebrew", "hi": "Hindi", "ho": "Hiri Motu",
    "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian", "hy": "Armenian",
    "hz": "Herero", "ia": "Interlingua", "id": "Indonesian", "ie": "Interlingue",
    "ig": "Igbo", "ii": "Sichuan Yi", "ik": "Inupiaq", "io": "Ido", "is": "Icelandic",
    "it": "Italian", "iu": "Inuktitut", "ja": "Japanese", "jv": "Javanese",
    "ka": "Georgian", "kg": "Kongo", "ki": "Kikuyu", "kj": "Kuanyama", "kk": "Kazakh",
    "kl": "Kalaallisut", "km": "Khmer", "kn": "Kannada", "ko": "Korean", "kr": "Kanuri",
    "ks": "Kashmiri", "ku": "Kurdish", "kv": "Komi", "kw": "Cornish", "ky": "Kyrgyz",
    "la": "Latin", "lb": "Luxembourgish", "lg": "Ganda", "li": "Limburgish",
    "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian", "lu": "Luba-Katanga",
    "lv": "Latvian", "mg": "Malagasy", "mh": "Marshallese", "mi": "Maori",
    "mk": "Macedonian", "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi",
    "ms": "Malay", "mt": "Maltese", "my": "Burmese", "na": "Nauru",
    "nb": "Norwegian Bokmål", "nd": "North Ndebele", "ne": "Nepali", "ng": "Ndonga",
    "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian", "nr": "South Ndebele",
    "nv": "Navajo", "ny": "Chichewa", "oc": "Occitan", "oj": "Ojibwa", "om": "Oromo",
    "or": "Odia", "os": "Ossetian", "pa": "Punjabi", "pi": "Pali", "pl": "Polish",
    "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua", "rm": "Romansh", "rn": "Rundi",
    "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "sa": "Sanskrit",
    "sc": "Sardinian", "sd": "Sindhi", "se": "Northern Sami", "sg": "Sango",
    "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "sm": "Samoan", "sn": "Shona",
    "so": "Somali", "sq": "Albanian", "sr": "Serbian", "ss": "Swati",
    "st": "Southern Sotho", "su": "Sundanese", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "te": "Telugu", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya",
    "tk": "Turkmen", "tl": "Tagalog", "tn": "Tswana", "to": "Tongan", "tr": "Turkish",
    "ts": "Tsonga", "tt": "Tatar", "tw": "Twi", "ty": "Tahitian", "ug": "Uyghur",
    "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "ve": "Venda", "vi": "Vietnamese",
    "vo": "Volapük", "wa": "Walloon", "wo": "Wolof", "xh": "Xhosa", "yi": "Yiddish",
    "yo": "Yoruba", "za": "Zhuang", "zh": "Chinese", "zu": "Zulu",
    # former or non-standard two-letter codes still found in corpora
    "iw": "Hebrew", "jw": "Javanese", "in": "Indonesian", "ji": "Yiddish",
    "mo": "Moldavian",
    # ISO 639-3
    "ast": "Asturian", "bas": "Basaa", "ceb": "Cebuano", "ckb": "Central Kurdish",
    "cmn": "Mandarin Chinese", "cnh": "Hakha Chin", "dyu": "Dyula", "fil": "Filipino",
    "haw": "Hawaiian", "hsb": "Upper Sorbian", "kab": "Kabyle", "kam": "Kamba",
    "kea": "Kabuverdianu", "kmr": "Northern Kurdish", "lij": "Ligurian", "ltg": "Latgalian",
    "luo": "Luo", "mdf": "Moksha", "mhr": "Meadow Mari", "mrj": "Hill Mari", "myv": "Erzya",
    "nan": "Min Nan Chinese", "nso": "Northern Sotho", "sah": "Yakut", "sco": "Scots",
    "sat": "Santali", "skr": "Saraiki", "tig": "Tigre", "tok": "Toki Pona",
    "umb": "Umbundu", "vot": "Votic", "war": "Waray", "yue": "Cantonese",
    "zgh": "Standard Moroccan Tamazight",
}


def language_name(code: str) -> str:
    """The English name of a language code (``fi`` -> ``Finnish``, ``pt_BR`` ->
    ``Portuguese (BR)``); the code itself when it is not a known code."""
    base, sep, rest = code.replace("_", "-").partition("-")
    name = NAMES.get(base.lower())
    if name is None:
        return code
    return f"{name} ({rest})" if sep and rest else name


def labelled(code: str) -> str:
    """``fi (Finnish)``, or just the code when it has no other name."""
    name = language_name(code)
    return code if name == code else f"{code} ({name})"


def parse_langs(value: str | Iterable[str] | None) -> list[str] | None:
    """``"en,de, fr"`` or ``["en", "de"]`` -> a list without repeats; None/empty -> None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = list(dict.fromkeys(str(x).strip() for x in items if str(x).strip()))
    return out or None


def check_subset(subset: Iterable[str], langs: Sequence[str]) -> list[str]:
    """The languages of ``subset``, in the model's order (``langs``).

    Raises:
        LreError: one line naming the codes the model does not know and listing its
            languages, or when fewer than two languages are asked for.
    """
    subset = parse_langs(subset) or []
    unknown = [lang for lang in subset if lang not in langs]
    if unknown:
        raise LreError(f"--langs: the model does not know {', '.join(unknown)}; its "
                       f"languages: {' '.join(langs)}")
    if len(subset) < 2:
        raise LreError(f"--langs: give at least two of the model's languages, got "
                       f"{','.join(subset) or 'none'}")
    return [lang for lang in langs if lang in subset]


def subset_log_posteriors(log_post: np.ndarray, langs: Sequence[str],
                          subset: Sequence[str]) -> np.ndarray:
    """Log-posteriors ``(..., len(langs))`` -> ``(..., len(subset))`` renormalised over the
    subset (``subset`` as :func:`check_subset` returns it)."""
    from scipy.special import log_softmax

    cols = [list(langs).index(lang) for lang in subset]
    return log_softmax(np.asarray(log_post, dtype=np.float64)[..., cols], axis=-1)


def subset_result(result: Any, langs: Sequence[str], subset: Sequence[str]) -> Any:
    """A model result (:class:`lre.inference.chunks.UtteranceResult`) with its
    log-posteriors and per-segment log-posteriors renormalised over ``subset``."""
    seg = result.segment_log_posteriors
    return dataclasses.replace(
        result, log_posteriors=subset_log_posteriors(result.log_posteriors, langs, subset),
        segment_log_posteriors=None if seg is None else subset_log_posteriors(seg, langs,
                                                                              subset))


def add_answer_options(parser: argparse.ArgumentParser) -> None:
    """``--langs`` and ``--unknown-threshold``: which answers ``lre identify`` and ``lre
    score`` may give (one definition for both commands)."""
    parser.add_argument("--langs", default=None, metavar="L1,L2,...",
                        help="only these of the model's languages: posteriors renormalised "
                             "over them (e.g. en,de,fr)")
    parser.add_argument("--unknown-threshold", type=float, default=None, metavar="P",
                        help="answer 'unknown' when the top posterior is below P, instead of "
                             "the model dir's open-set operating point (openset.json)")
