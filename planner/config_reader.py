"""Typed reading of a loaded configuration mapping, every problem collected.

:class:`MappingReader` reads one mapping of a document (``source: key.path``
named in every message) and, instead of stopping at the first bad key,
records the problem in an :class:`Problems` list shared by the whole document
and returns a placeholder, so that one pass reports every missing or bad key
of a file in one message (:meth:`Problems.raise_if_any`). Values are quoted
shortened (:func:`planner.config_loader.short`); numbers must be finite.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from planner.config_loader import short
from planner.errors import CampaignError

#: At most this many problems are listed; the rest are counted.
MAX_LISTED = 20

_MISSING = object()


def is_finite_number(value: object) -> bool:
    """A bool-free int or float that is finite as a float (10**400 is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def suggest(value: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest choice, or nothing."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


class Problems:
    """The problems found in one document, raised together."""

    def __init__(self, source: str, error: type[Exception] = CampaignError) -> None:
        self.source = source
        self.error = error
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            raise self.error(f"{self.source}: {self.items[0]}")
        listed = [f"  - {m}" for m in self.items[:MAX_LISTED]]
        if len(self.items) > MAX_LISTED:
            listed.append(f"  - and {len(self.items) - MAX_LISTED} more")
        raise self.error(f"{self.source}: {len(self.items)} problems:\n" + "\n".join(listed))


class MappingReader:
    """Reads one mapping, naming ``key.path`` in every problem it records.

    A reader over a missing or malformed mapping is *broken*: its reads
    return defaults or placeholders without recording more problems (the
    missing parent was already reported).
    """

    def __init__(self, data: object, path: str, problems: Problems, *,
                 broken: bool = False) -> None:
        self.path = path
        self.problems = problems
        self.broken = broken
        if not broken and not isinstance(data, Mapping):
            problems.add(f"{path or 'top level'} = {short(data)}, expected a mapping")
            self.broken = True
        self.data: Mapping[str, Any] = data if isinstance(data, Mapping) else {}

    @property
    def source(self) -> str:
        return self.problems.source

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, value: object, expected: str, hint: str = "") -> None:
        if not self.broken:
            self.problems.add(f"{self.key(name)} = {short(value)}, expected {expected}{hint}")

    def check_keys(self, allowed: Sequence[str]) -> None:
        for k in self.data:
            if k not in allowed:
                self.problems.add(
                    f"unknown key {short(self.key(str(k)))}, expected one of "
                    f"{', '.join(allowed)}{suggest(str(k), allowed)}")

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, default: object = _MISSING) -> Any:
        """The raw value; a missing required key is recorded and gives ``None``."""
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            if not self.broken:
                self.problems.add(f"missing key {self.key(name)!r}")
            return None
        return default

    def number(self, name: str, default: object = _MISSING, *, minimum: float = 0.0,
               strict: bool = True, maximum: float = math.inf) -> float:
        value = self.get(name, default)
        if value is None and name not in self.data:
            return max(minimum, 1.0)
        if (not is_finite_number(value) or value < minimum
                or (strict and value == minimum) or value > maximum):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            upper = f" and <= {maximum:g}" if math.isfinite(maximum) else ""
            self.fail(name, value, f"a finite number {bound}{upper}")
            return max(minimum, 1.0)
        return float(value)

    def integer(self, name: str, default: object = _MISSING, *, minimum: int = 1,
                maximum: int | None = None) -> int:
        value = self.get(name, default)
        if value is None and name not in self.data:
            return minimum
        if (not isinstance(value, int) or isinstance(value, bool) or value < minimum
                or (maximum is not None and value > maximum)):
            upper = f" and <= {maximum:,}" if maximum is not None else ""
            self.fail(name, value, f"an integer >= {minimum}{upper}")
            return minimum
        return value

    def text(self, name: str, default: object = _MISSING) -> str:
        value = self.get(name, default)
        if value is None and name not in self.data:
            return "?"
        if not isinstance(value, str) or not value:
            self.fail(name, value, "a non-empty string")
            return "?"
        return value

    def choice(self, name: str, choices: Sequence[str], default: object = _MISSING) -> str:
        value = self.get(name, default)
        if value is None and name not in self.data:
            return choices[0]
        if not isinstance(value, str) or value not in choices:
            self.fail(name, value, f"one of {', '.join(choices)}", suggest(str(value), choices))
            return choices[0]
        return value

    def strings(self, name: str, default: object = _MISSING,
                choices: Sequence[str] | None = None) -> tuple[str, ...]:
        value = self.get(name, default)
        if value is None and name not in self.data:
            return ("?",)
        if isinstance(value, str) or not isinstance(value, Sequence) or not value:
            self.fail(name, value, "a non-empty list of strings")
            return ("?",)
        for v in value:
            if not isinstance(v, str):
                self.fail(name, value, "a non-empty list of strings")
                return ("?",)
            if choices is not None and v not in choices:
                self.fail(name, v, f"one of {', '.join(choices)}", suggest(v, choices))
        return tuple(value)

    def bbox(self, name: str, default: object = _MISSING
             ) -> tuple[float, float, float, float] | None:
        """A lon/lat bbox, or ``None`` (recorded when bad or required and missing)."""
        value = self.get(name, default)
        if value is None:
            return None
        expected = "[lon_min, lat_min, lon_max, lat_max] in degrees with min < max"
        if (isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 4
                or not all(is_finite_number(v) for v in value)):
            self.fail(name, value, expected)
            return None
        x0, y0, x1, y1 = (float(v) for v in value)
        if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
            self.fail(name, value, expected)
            return None
        return x0, y0, x1, y1

    def child(self, name: str, default: object = _MISSING) -> MappingReader:
        if name not in self.data and default is _MISSING:
            self.get(name)
            return MappingReader({}, self.key(name), self.problems, broken=True)
        return MappingReader(self.get(name, default), self.key(name), self.problems,
                             broken=self.broken)
