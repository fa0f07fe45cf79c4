"""Reading adapter settings from the environment, with errors that name the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit


class SettingError(RuntimeError):
    """An environment variable an adapter needs is missing or invalid."""


def environment(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def require_setting(env: Mapping[str, str], name: str, hint: str) -> str:
    """Return the non-empty value of ``name``; raise :class:`SettingError` with ``hint``."""
    value = env.get(name, "").strip()
    if not value:
        raise SettingError(f"environment variable {name} is not set; {hint}")
    return value


def http_url(name: str, value: str) -> str:
    """Return ``value`` without a trailing slash if it is an http(s) URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingError(
            f"{name}={value!r} is not an http(s) URL; set it like http://127.0.0.1:12111"
        )
    return value.rstrip("/")


def number_setting(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    """Return the float value of ``name``, or ``default`` when it is unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a number") from None
    if not minimum <= value <= maximum:
        raise SettingError(f"{name}={raw!r} is out of range; use {minimum} to {maximum}")
    return value
