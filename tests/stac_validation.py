"""Offline STAC validation for the tests: pystac's bundled core schemas + our extension schemas.

pystac ships the STAC 1.1.0 core schemas and fetches extension schemas from
the network; the tests run without one, so the extension schemas under
``tests/data/stac_schemas`` are put in the validator's cache under their
``$id`` beforehand (see the README there). A schema that is neither bundled
nor there makes validation fail, naming it, instead of reaching the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pystac
from pystac.validation import JsonSchemaSTACValidator, validate_dict
from pystac.validation.stac_validator import GetSchemaError

SCHEMAS = Path(__file__).resolve().parent / "data" / "stac_schemas"


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator that never fetches: unknown schemas are an error."""

    def __init__(self) -> None:
        super().__init__()
        for path in sorted(SCHEMAS.glob("*.json")):
            doc = json.loads(path.read_text())
            self.schema_cache[doc["$id"]] = doc

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise GetSchemaError(schema_uri, LookupError(
                f"schema {schema_uri} is neither bundled with pystac nor in {SCHEMAS}"))
        return super()._get_schema(schema_uri)


def validate_stac(doc: dict[str, Any]) -> list[str]:
    """Validate an item or collection (core and every declared extension); the schemas used.

    Raises ``pystac.STACValidationError`` on the first violation.
    """
    used: list[str] = validate_dict(doc, validator=OfflineValidator())
    return used


def stac_version() -> str:
    return str(pystac.get_stac_version())
