"""EventBridge-style content filtering used by the local stream pollers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.local.event_pattern import EventPattern, PatternError, matches_any
from infra.local.template import Template

TIP_RECORD: dict[str, Any] = {
    "eventName": "INSERT",
    "dynamodb": {
        "NewImage": {
            "kind": {"S": "tip"},
            "version": {"N": "3"},
            "lines": {"L": [{"M": {"sku": {"S": "MUG-RED"}}}, {"M": {"sku": {"S": "CUP"}}}]},
        }
    },
    "size": 12,
    "ip": "10.0.0.7",
    "tags": ["a", "b"],
    "nothing": None,
}


def matches(pattern: dict[str, Any], event: dict[str, Any] = TIP_RECORD) -> bool:
    return EventPattern.parse(json.dumps(pattern)).matches(event)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"eventName": ["INSERT", "MODIFY"]}, True),
        ({"eventName": ["REMOVE"]}, False),
        ({"dynamodb": {"NewImage": {"kind": {"S": ["tip"]}}}}, True),
        ({"dynamodb": {"NewImage": {"kind": {"S": ["event"]}}}}, False),
        ({"missing": ["x"]}, False),
        ({"size": [12]}, True),
        ({"size": [12.0]}, True),
        ({"size": ["12"]}, False),
        ({"nothing": [None]}, True),
        ({"tags": ["b"]}, True),
        ({"tags": ["c"]}, False),
        ({"eventName": [{"prefix": "INS"}]}, True),
        ({"eventName": [{"prefix": "MOD"}]}, False),
        ({"eventName": [{"suffix": "ERT"}]}, True),
        ({"eventName": [{"equals-ignore-case": "insert"}]}, True),
        ({"eventName": [{"prefix": {"equals-ignore-case": "ins"}}]}, True),
        ({"eventName": [{"wildcard": "I*T"}]}, True),
        ({"eventName": [{"wildcard": "M*"}]}, False),
        ({"eventName": [{"anything-but": ["REMOVE"]}]}, True),
        ({"eventName": [{"anything-but": "INSERT"}]}, False),
        ({"eventName": [{"anything-but": {"prefix": "IN"}}]}, False),
        ({"missing": [{"anything-but": "x"}]}, False),
        ({"size": [{"numeric": [">", 10, "<=", 12]}]}, True),
        ({"size": [{"numeric": ["<", 12]}]}, False),
        ({"dynamodb": {"NewImage": {"version": {"N": [{"numeric": [">", 0]}]}}}}, False),
        ({"missing": [{"exists": False}]}, True),
        ({"missing": [{"exists": True}]}, False),
        ({"eventName": [{"exists": True}]}, True),
        ({"dynamodb": [{"exists": True}]}, False),
        ({"ip": [{"cidr": "10.0.0.0/24"}]}, True),
        ({"ip": [{"cidr": "10.0.1.0/24"}]}, False),
        ({"$or": [{"eventName": ["REMOVE"]}, {"size": [12]}]}, True),
        ({"$or": [{"eventName": ["REMOVE"]}, {"size": [13]}]}, False),
        ({"eventName": ["INSERT"], "size": [13]}, False),
    ],
)
def test_matcher(pattern: dict[str, Any], expected: bool) -> None:
    assert matches(pattern) is expected


def test_field_inside_an_array_of_objects_matches_any_element() -> None:
    pattern = {"dynamodb": {"NewImage": {"lines": {"L": {"M": {"sku": {"S": ["CUP"]}}}}}}}

    assert matches(pattern)


def test_several_filters_match_when_any_one_does() -> None:
    filters = [
        EventPattern.parse('{"eventName": ["REMOVE"]}'),
        EventPattern.parse('{"size": [12]}'),
    ]

    assert matches_any(filters, TIP_RECORD)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '["a"]',
        '{"eventName": "INSERT"}',
        '{"eventName": []}',
        '{"eventName": [{"unknown-op": 1}]}',
        '{"size": [{"numeric": [">"]}]}',
        '{"size": [{"exists": "yes"}]}',
    ],
)
def test_invalid_pattern_is_rejected(text: str) -> None:
    with pytest.raises(PatternError):
        EventPattern.parse(text)


def test_projector_filter_of_the_real_template_passes_tips_only() -> None:
    spec = Template.load().functions()["ProjectorFunction"]
    (properties,) = spec.events_of_type("DynamoDB").values()
    pattern = EventPattern.parse(properties["FilterCriteria"]["Filters"][0]["Pattern"])
    event_record = {**TIP_RECORD, "dynamodb": {"NewImage": {"kind": {"S": "event"}}}}

    assert (pattern.matches(TIP_RECORD), pattern.matches(event_record)) == (True, False)
