"""Read-model rows to DynamoDB items and back: integers stay integers, None is left out."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    """Turn the Decimals that boto3 returns for numbers back into ints."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _attribute(value: Any) -> dict[str, Any]:
    """Serialize the types read-model rows hold; anything else goes to boto3's serializer.

    Rows are written in bulk by a rebuild, where boto3's generic serializer was a
    tenth of the Python time.
    """
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, list):
        return {"L": [_attribute(item) for item in value]}
    if isinstance(value, dict):
        return {"M": {key: _attribute(item) for key, item in value.items() if item is not None}}
    return dict(_serializer.serialize(value))


def to_item(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _attribute(value) for key, value in row.items() if value is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def to_key(key: Mapping[str, str]) -> dict[str, Any]:
    return {name: {"S": str(value)} for name, value in key.items()}
