"""Settings: typed sections, and the one way they are merged, coerced and checked.

A config is built in layers: built-in defaults <- a YAML file <- ``--set section.key=value``
overrides. Every value is coerced to the type of its default (``"128"`` -> 128, the string
YAML makes of ``1e-3`` -> 0.001), and a key that the defaults lack is an error naming the
closest known key::

    --set: unknown key 'model.hiden1' (did you mean 'model.hidden1'?); known: name, ...

A section is a dataclass deriving from :class:`Section`: its fields are the keys, their
defaults give the types, ``CHOICES`` lists the allowed values of string keys and
:meth:`Section.check` the range checks. Model sizes are a plain dict (each model has its own
keys) merged by the same :func:`merge`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from lre.utils import LreError

__all__ = [
    "Section",
    "coerce",
    "load_config_file",
    "merge",
    "parse_overrides",
    "type_name",
    "unknown_key_error",
]

SectionT = TypeVar("SectionT", bound="Section")


def type_name(default: Any) -> str:
    """What a value must be to replace ``default``, in words."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, list):
        return "a non-empty list"
    return "a string"


def _parse_scalar(text: str) -> Any:
    """A command-line or YAML string as the value it spells (``"24"`` -> 24, ``"1e-3"`` ->
    0.001: YAML 1.1 reads exponents without a dot as strings); unparsable text stays."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """``value`` as the type of ``default``; raise :class:`LreError` naming ``key`` if it
    cannot be one (``source: key = value is not an integer``).

    Strings given for non-string keys are parsed first. Integers take integral floats
    (``3.0``), numbers take integers, lists are checked item by item against the default's
    first item, and a string key takes a number as its text. ``None`` defaults take anything.
    """
    if default is None:
        return value
    if isinstance(value, str) and not isinstance(default, str):
        value = _parse_scalar(value)
    bad = LreError(f"{source}: {key} = {value!r} is not {type_name(default)}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if isinstance(default, float):
        if _is_number(value):
            return float(value)
        raise bad
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)) or not value:
            raise bad
        item = default[0] if default else None
        return [coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        if _is_number(value):
            return str(value)
        raise bad
    return value


def unknown_key_error(source: str, key: Any, known: Iterable[Any], prefix: str = ""
                      ) -> LreError:
    """``source: unknown key 'prefix.key' (did you mean 'prefix.close'?); known: ...``."""
    names = [str(k) for k in known]
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return LreError(f"{source}: unknown key '{prefix}{key}'{hint}; known: {', '.join(names)}")


def merge(base: dict[str, Any], update: Any, source: str, prefix: str = "") -> None:
    """Merge ``update`` into ``base`` in place, section by section.

    Every key of ``update`` must be in ``base`` and every value is coerced to the type of
    the value it replaces (:func:`coerce`); ``prefix`` (``"model."``) is how messages name
    the keys of ``base``. Raises :class:`LreError` with a one-line message.
    """
    if not isinstance(update, Mapping):
        raise LreError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping of "
                       f"keys to values, got {update!r}")
    for key, value in update.items():
        if key not in base:
            raise unknown_key_error(source, key, base, prefix)
        if isinstance(base[key], dict):
            merge(base[key], value, source, f"{prefix}{key}.")
        else:
            base[key] = coerce(value, base[key], f"{prefix}{key}", source)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["model.h1=128", "optim.lr=2e-3"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise LreError(f"--set {item}: expected section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LreError(f"--set {item}: '{part}' is set both as a value and a section")
        node[parts[-1]] = value
    return out


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict of sections (an empty file gives ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LreError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise LreError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LreError(f"{path}: expected a mapping of sections (model, data, optim, ...)")
    return data


@dataclass
class Section:
    """Base of a typed config section: a dataclass whose every field has a default.

    ``NAME`` is the section's key in a config file (``data``, ``optim``, ...), ``CHOICES``
    maps string fields to their allowed values; subclasses add range checks in
    :meth:`check`.
    """

    NAME: ClassVar[str] = ""
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def from_dict(cls: type[SectionT], values: Mapping[str, Any], source: str = "config"
                  ) -> SectionT:
        """The defaults updated with ``values`` by :func:`merge`: unknown keys (with the
        closest known one) and values of the wrong type raise :class:`LreError`."""
        merged = cls().to_dict()
        merge(merged, values, source, f"{cls.NAME}." if cls.NAME else "")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (what a config file holds)."""
        return asdict(self)

    def validate(self, source: str = "config") -> None:
        """Raise :class:`LreError` naming the first bad setting: choices, then ranges."""
        for name, choices in self.CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise LreError(f"{source}: {self.key(name)}: {value!r} is not one of "
                               f"{', '.join(choices)}")
        self.check(source)

    def check(self, source: str) -> None:
        """Range checks of the section's values (none by default)."""

    def key(self, name: str) -> str:
        """``name`` as a config file's dotted key (``optim.lr``)."""
        return f"{self.NAME}.{name}" if self.NAME else name

    def require(self, source: str, checks: Iterable[tuple[bool, str, str]]) -> None:
        """Raise ``source: section.key: message, got value`` for the first check whose
        condition is false; ``key`` may name several fields (``beta1/beta2``)."""
        for ok, name, message in checks:
            if not ok:
                got = f", got {getattr(self, name)}" if hasattr(self, name) else ""
                raise LreError(f"{source}: {self.key(name)}: {message}{got}")
