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

YAML goes through libyaml's parser (PyYAML's C extension) twice: once as an
event stream to refuse anchors, aliases and depth before anything is built,
then through the safe constructor with the duplicate-key check. A 1 MB
campaign of 12,600 scenes loads in well under 2 s that way.

:func:`short` quotes a value for an error message, at most ``limit``
characters, so an error never prints a megabyte of user input.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Hashable
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


def _line(node_or_event: Any) -> int:
    return int(node_or_event.start_mark.line) + 1


def _check_events(text: str, source: str) -> None:
    """Refuse anchors, aliases and nesting beyond MAX_DEPTH before anything is built."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(
                f"{source}, line {_line(event)}: alias *{event.anchor[:30]} is not "
                "accepted (anchors and aliases are refused: they can expand without bound); "
                "write the value out")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise ConfigError(
                f"{source}, line {_line(event)}: anchor &{anchor[:30]} is not accepted "
                "(anchors and aliases are refused: they can expand without bound)")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(
                    f"{source}, line {_line(event)}: nesting deeper than {MAX_DEPTH} levels, "
                    "expected a shallow configuration")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


class _StrictLoader(yaml.CSafeLoader):
    """The safe loader, with duplicate keys an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise ConfigError(
                    f"{self.source}, line {_line(key_node)}: key {short(key)} is not a "
                    "scalar, expected a string key")
            if key in seen:
                raise ConfigError(
                    f"{self.source}, line {_line(key_node)}: duplicate key {short(key)} "
                    f"(first at line {seen[key]}); each key may appear once in a mapping")
            seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    source = "<yaml>"


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document, strictly (see the module docstring)."""
    try:
        _check_events(text, source)
        loader = _StrictLoader(text)
        loader.source = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
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
