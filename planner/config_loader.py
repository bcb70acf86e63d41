"""Strict reading of configuration files (campaign YAML, STAC and plan JSON).

A configuration file is small, typed by hand and sometimes hostile; every
oddity that YAML or JSON would silently accept is an error here, named with
the file, the line where known, and what was expected:

- more than :data:`MAX_FILE_BYTES` bytes (checked before reading);
- not UTF-8 text (Latin-1, UTF-16, binary), a UTF-8 byte-order mark aside;
- a duplicate key in one mapping (YAML and JSON alike keep the last one
  silently; here it names the key and both lines);
- YAML anchors and aliases: ``*ref`` expands without bound (an alias bomb
  of a few hundred bytes is gigabytes), so neither is accepted;
- nesting deeper than :data:`MAX_DEPTH` (no RecursionError);
- JSON ``NaN``, ``Infinity`` and ``-Infinity``.

YAML goes through libyaml's parser (PyYAML's C extension) as an event
stream, and the document is built from the events here: anchors, aliases,
depth, tags and duplicate keys are refused as they come, before anything is
expanded. Plain scalars follow the YAML 1.2 core schema (``yes``, ``no``,
``on`` and dates stay strings; ``1e9`` is a float). A 1.6 MB campaign of
12,600 scenes loads and validates in 0.4 s that way, PyYAML's constructor
alone takes 3.9 s over the same parser (``python -m benchmarks.campaign_load``).

:func:`short` quotes a value for an error message, at most ``limit``
characters, so an error never prints a megabyte of user input.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml

from planner.errors import ConfigError

#: Largest configuration file read, in bytes (a 12,600-scene campaign is about 1 MB).
MAX_FILE_BYTES = 64 * 2**20
#: Deepest nesting of mappings and lists accepted (a campaign needs 5).
MAX_DEPTH = 32
#: Longest quotation of a value in an error message, in characters.
SHORT_CHARS = 60

_BOMS = {b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}

_repr = reprlib.Repr()
_repr.maxstring = SHORT_CHARS
_repr.maxother = SHORT_CHARS
_repr.maxlist = 6
_repr.maxdict = 6
_repr.maxlevel = 3


def short(value: object, limit: int = SHORT_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, with the full length when cut."""
    text = _repr.repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; size, encoding and binary content checked."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{what} {str(p)!r} is {size / 2**20:.0f} MiB, expected at most "
                f"{MAX_FILE_BYTES // 2**20} MiB of text")
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from exc
    return decode(data, f"{what} {str(p)!r}")


def decode(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text, or a ConfigError naming ``source`` and the encoding found."""
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise ConfigError(f"{source} is {name} text, expected UTF-8; save it as UTF-8")
    if b"\x00" in data[:8192]:
        raise ConfigError(f"{source} holds NUL bytes: a binary file, expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1].hex()
        raise ConfigError(
            f"{source} is not UTF-8 text (byte 0x{bad} at offset {exc.start}; Latin-1 or "
            "another legacy encoding?); save it as UTF-8") from exc


def _line(event: Any) -> int:
    return int(event.start_mark.line) + 1


_NULL = {"~", "null", "Null", "NULL", ""}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_SPECIAL = {".inf": math.inf, ".Inf": math.inf, ".INF": math.inf, "+.inf": math.inf,
            "+.Inf": math.inf, "+.INF": math.inf, "-.inf": -math.inf, "-.Inf": -math.inf,
            "-.INF": -math.inf, ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
#: Scalars starting with one of these may be something other than a string.
_MAYBE_TYPED = set("0123456789+-.~tTfFnN")
_STD = "tag:yaml.org,2002:"
_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}


def _scalar(event: Any, source: str) -> Any:
    """A scalar by the YAML 1.2 core schema (``yes``/``no``/dates stay strings)."""
    value: str = event.value
    tag = event.tag
    if tag is not None and tag != "!":
        if tag not in _TAGS:
            raise ConfigError(f"{source}, line {_line(event)}: tag {tag[:40]} is not accepted; "
                              "expected plain values")
        if tag == _STD + "str":
            return value
    elif not event.implicit[0]:
        return value  # quoted
    if not value:
        return None
    if value[0] not in _MAYBE_TYPED:
        return value
    if value in _NULL:
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.fullmatch(value):
        return int(value, 0) if value[:2] in ("0o", "0x") else int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    if value in _SPECIAL:
        return _SPECIAL[value]
    return value


def _build(text: str, source: str) -> Any:
    """The document of ``text`` from libyaml's events: anchors, aliases, deep nesting,
    non-scalar and duplicate keys refused as they come (before anything is expanded)."""
    stack: list[Any] = []  # containers being filled
    keys: list[Any] = []  # per mapping on the stack: pending key (or _NO_KEY)
    lines: list[dict[Any, int]] = []  # per container: key -> line (mappings)
    root: Any = None
    seen_document = False
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        kind = type(event)
        if kind is yaml.ScalarEvent or kind is yaml.MappingStartEvent \
                or kind is yaml.SequenceStartEvent:
            if event.anchor is not None:
                raise ConfigError(
                    f"{source}, line {_line(event)}: anchor &{event.anchor[:30]} is not "
                    "accepted (anchors and aliases are refused: they can expand without "
                    "bound); write the value out")
            if kind is yaml.ScalarEvent:
                node: Any = _scalar(event, source)
            else:
                if event.tag is not None and event.tag not in _TAGS and event.tag != "!":
                    raise ConfigError(f"{source}, line {_line(event)}: tag "
                                      f"{event.tag[:40]} is not accepted")
                if len(stack) >= MAX_DEPTH:
                    raise ConfigError(
                        f"{source}, line {_line(event)}: nesting deeper than {MAX_DEPTH} "
                        "levels, expected a shallow configuration")
                node = {} if kind is yaml.MappingStartEvent else []
            _add(stack, keys, lines, node, event, source)
            if kind is not yaml.ScalarEvent:
                stack.append(node)
                keys.append(_NO_KEY)
                lines.append({})
            elif not stack:
                root = node
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            done = stack.pop()
            keys.pop()
            lines.pop()
            if not stack:
                root = done
        elif kind is yaml.AliasEvent:
            raise ConfigError(
                f"{source}, line {_line(event)}: alias *{event.anchor[:30]} is not accepted "
                "(anchors and aliases are refused: they can expand without bound); write "
                "the value out")
        elif kind is yaml.DocumentStartEvent:
            if seen_document:
                raise ConfigError(f"{source}, line {_line(event)}: a second YAML document; "
                                  "expected one")
            seen_document = True
    return root


_NO_KEY = object()


def _add(stack: list[Any], keys: list[Any], lines: list[dict[Any, int]], node: Any,
         event: Any, source: str) -> None:
    if not stack:
        return
    parent = stack[-1]
    if isinstance(parent, list):
        parent.append(node)
        return
    key = keys[-1]
    if key is _NO_KEY:
        if isinstance(node, (dict, list)):
            raise ConfigError(f"{source}, line {_line(event)}: a mapping key is a "
                              f"{type(node).__name__}, expected a plain key")
        seen = lines[-1]
        if node in seen:
            raise ConfigError(
                f"{source}, line {_line(event)}: duplicate key {short(node)} (first at line "
                f"{seen[node]}); each key may appear once in a mapping")
        seen[node] = _line(event)
        keys[-1] = node
    else:
        parent[key] = node
        keys[-1] = _NO_KEY


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document, strictly (see the module docstring)."""
    try:
        return _build(text, source)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {_yaml_problem(exc)}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        return f"{(exc.problem or 'unreadable')[:120]}{where}"
    return short(str(exc), 120)


def load_yaml(path: str | Path, what: str = "file") -> Any:
    """Read and parse a YAML file strictly."""
    return parse_yaml(read_text(path, what), f"{what} {str(path)!r}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number here")


def parse_json(text: str, source: str) -> Any:
    """One JSON document, strictly: no duplicate keys, NaN, Infinity or deep nesting."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ConfigError(f"{source}: duplicate key {short(k)} in a JSON object; "
                                  "each key may appear once")
            out[k] = v
        return out

    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ConfigError(f"{source}: nesting deeper than {MAX_DEPTH} levels, expected a "
                          "shallow document") from exc
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{source} is not valid JSON: {short(str(exc), 120)}") from exc
    if _depth(doc) > MAX_DEPTH:
        raise ConfigError(f"{source}: nesting deeper than {MAX_DEPTH} levels, expected a "
                          "shallow document")
    return doc


def _depth(doc: Any) -> int:
    """Deepest nesting of lists and dicts, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, d + 1)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, d + 1) for v in node if isinstance(v, (list, dict)))
    return deepest


def load_json(path: str | Path, what: str = "file") -> Any:
    """Read and parse a JSON file strictly."""
    return parse_json(read_text(path, what), f"{what} {str(path)!r}")
