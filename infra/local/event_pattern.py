"""EventBridge-style content patterns, as Lambda event filtering and EventBridge rules use them.

A pattern is a JSON object whose leaves are lists of matchers. A leaf matches when any
value found at its path matches any of its matchers. Arrays in the event are flattened:
a path that crosses an array of objects collects the field from every element, which is
how EventBridge treats them (moto's matcher does not descend into arrays of objects).
Object keys in a pattern are ANDed; ``$or`` takes a list of sub-patterns, any of which
may match.

Supported matchers are literal strings, numbers, booleans and null, plus ``prefix``,
``suffix``, ``equals-ignore-case``, ``wildcard``, ``numeric`` (operator and number pairs),
``exists``, ``cidr`` and ``anything-but``. The last takes a value, a list, or a nested
``prefix``, ``suffix``, ``equals-ignore-case`` or ``wildcard``.
"""

from __future__ import annotations

import ipaddress
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_NUMERIC_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    ">=": operator.ge,
    ">": operator.gt,
}


class PatternError(ValueError):
    """A pattern is invalid JSON or uses an unsupported matcher."""


@dataclass(frozen=True)
class EventPattern:
    """A parsed pattern. ``matches(event)`` returns whether the event passes it."""

    pattern: Mapping[str, Any]

    @classmethod
    def parse(cls, text: str) -> EventPattern:
        try:
            pattern = json.loads(text)
        except json.JSONDecodeError as error:
            raise PatternError(f"the pattern {text!r} is not valid JSON: {error}") from None
        if not isinstance(pattern, dict):
            raise PatternError(f"the pattern {text!r} must be a JSON object")
        _validate(pattern, path="")
        return cls(pattern)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return _matches_object(self.pattern, [event])


def matches_any(patterns: Sequence[EventPattern], event: Mapping[str, Any]) -> bool:
    """Lambda's rule for several filters: a record passes when any one of them matches."""
    return any(pattern.matches(event) for pattern in patterns)


def _validate(pattern: Mapping[str, Any], path: str) -> None:
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise PatternError(f"$or at {where!r} needs a list of at least two patterns")
            for alternative in value:
                if not isinstance(alternative, dict):
                    raise PatternError(f"each $or alternative at {where!r} must be an object")
                _validate(alternative, path)
        elif isinstance(value, dict):
            _validate(value, where)
        elif isinstance(value, list):
            if not value:
                raise PatternError(f"the matcher list at {where!r} is empty")
            for matcher in value:
                _validate_matcher(matcher, where)
        else:
            raise PatternError(
                f"the value at {where!r} must be an object or a list of matchers, got {value!r}"
            )


_KNOWN_MATCHERS = {
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
}


def _validate_matcher(matcher: Any, where: str) -> None:
    if not isinstance(matcher, dict):
        return
    if len(matcher) != 1:
        raise PatternError(f"a matcher at {where!r} must have exactly one key: {matcher!r}")
    ((name, argument),) = matcher.items()
    if name not in _KNOWN_MATCHERS:
        raise PatternError(f"unknown matcher {name!r} at {where!r}")
    if name == "numeric":
        if not isinstance(argument, list) or len(argument) % 2 or not argument:
            raise PatternError(f"numeric at {where!r} needs operator/number pairs: {argument!r}")
        for op, number in zip(argument[::2], argument[1::2], strict=True):
            if op not in _NUMERIC_OPERATORS or not _is_number(number):
                raise PatternError(f"numeric at {where!r} has a bad pair: {op!r}, {number!r}")
    if name == "exists" and not isinstance(argument, bool):
        raise PatternError(f"exists at {where!r} takes true or false, got {argument!r}")


# Matching -------------------------------------------------------------------------

_ABSENT = object()


def _matches_object(pattern: Mapping[str, Any], nodes: list[Any]) -> bool:
    for key, value in pattern.items():
        if key == "$or":
            if not any(_matches_object(alternative, nodes) for alternative in value):
                return False
            continue
        children = list(_children(nodes, key))
        if isinstance(value, dict):
            if not _matches_object(value, children):
                return False
        elif not _matches_leaf(value, children):
            return False
    return True


def _children(nodes: list[Any], key: str) -> Iterator[Any]:
    """Yield the values under ``key`` in every node, flattening arrays on the way."""
    for node in _flatten(nodes):
        if isinstance(node, dict) and key in node:
            yield node[key]


def _flatten(values: list[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value


def _matches_leaf(matchers: list[Any], values: list[Any]) -> bool:
    leaves = [value for value in _flatten(values) if not isinstance(value, dict)]
    for matcher in matchers:
        if isinstance(matcher, dict) and "exists" in matcher:
            if bool(leaves) == matcher["exists"]:
                return True
            continue
        if any(_matches_value(matcher, leaf) for leaf in leaves):
            return True
    return False


def _matches_value(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, dict):
        return _equal(matcher, value)
    ((name, argument),) = matcher.items()
    if name == "anything-but":
        return _matches_anything_but(argument, value)
    if name == "numeric":
        if not _is_number(value):
            return False
        pairs = zip(argument[::2], argument[1::2], strict=True)
        return all(_NUMERIC_OPERATORS[op](value, number) for op, number in pairs)
    if name == "cidr":
        if not isinstance(value, str):
            return False
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(argument, strict=False)
        except ValueError:
            return False
    return _matches_string(name, argument, value)


def _matches_string(name: str, argument: Any, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    text: str = value
    if isinstance(argument, dict) and set(argument) == {"equals-ignore-case"}:
        argument, text = argument["equals-ignore-case"], text.lower()
        if isinstance(argument, str):
            argument = argument.lower()
    if not isinstance(argument, str):
        return False
    expected: str = argument
    if name == "prefix":
        return text.startswith(expected)
    if name == "suffix":
        return text.endswith(expected)
    if name == "equals-ignore-case":
        return text.lower() == expected.lower()
    if name == "wildcard":
        return _wildcard_regex(expected).fullmatch(text) is not None
    return False


def _matches_anything_but(argument: Any, value: Any) -> bool:
    if isinstance(argument, dict):
        ((name, inner),) = argument.items()
        candidates = inner if isinstance(inner, list) else [inner]
        return isinstance(value, str) and not any(
            _matches_string(name, candidate, value) for candidate in candidates
        )
    excluded = argument if isinstance(argument, list) else [argument]
    return not any(_equal(item, value) for item in excluded)


def _equal(expected: Any, value: Any) -> bool:
    if _is_number(expected) and _is_number(value):
        return bool(expected == value)
    return type(expected) is type(value) and bool(expected == value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _wildcard_regex(text: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.DOTALL)
