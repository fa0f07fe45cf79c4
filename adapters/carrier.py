"""The shipment service on the carrier's HTTP API (see ``infra/local/fake_carrier.py``).

``POST /shipments`` carries the caller's idempotency key in the ``Idempotency-Key`` header.
The adapter retries connection errors, timeouts, 429 and 5xx responses a bounded number of
times with that same key, so a retry never creates a second shipment.

Settings come from the environment:

- ``CARRIER_API_URL`` (required): the API address, e.g. ``http://127.0.0.1:12112``.
- ``CARRIER_API_KEY`` (optional): sent as ``Authorization: Bearer ...`` when set.
- ``CARRIER_CONNECT_TIMEOUT_SECONDS`` (default 3), ``CARRIER_READ_TIMEOUT_SECONDS``
  (default 10) and ``CARRIER_MAX_RETRIES`` (default 2).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import requests
from aws_lambda_powertools import Logger

from adapters.settings import environment, http_url, number_setting, require_setting
from application.external import ShipmentRejectedError, ShipmentTransientError
from domain.order import OrderLine

logger = Logger(service="orders", child=True)

CARRIER_API_URL: Final = "CARRIER_API_URL"
CARRIER_API_KEY: Final = "CARRIER_API_KEY"
CARRIER_CONNECT_TIMEOUT_SECONDS: Final = "CARRIER_CONNECT_TIMEOUT_SECONDS"
CARRIER_READ_TIMEOUT_SECONDS: Final = "CARRIER_READ_TIMEOUT_SECONDS"
CARRIER_MAX_RETRIES: Final = "CARRIER_MAX_RETRIES"

# 408 and 425 mean "send it again later"; 429 and 5xx mean the carrier is overloaded or
# failed before finishing, which the idempotency key makes safe to retry.
_RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})
_TRANSPORT_ERRORS: Final = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class CarrierSettings:
    """How to reach the carrier and how long to wait; durations are in seconds."""

    api_url: str
    api_key: str | None = field(default=None, repr=False)
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_retries: int = 2
    retry_initial_delay: float = 0.5
    retry_max_delay: float = 4.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> CarrierSettings:
        values = environment(env)
        api_url = require_setting(
            values, CARRIER_API_URL, "set it to the carrier API address, e.g. the local fake's"
        )
        return cls(
            api_url=http_url(CARRIER_API_URL, api_url),
            api_key=values.get(CARRIER_API_KEY, "").strip() or None,
            connect_timeout=number_setting(
                values, CARRIER_CONNECT_TIMEOUT_SECONDS, 3.0, minimum=0.1, maximum=60
            ),
            read_timeout=number_setting(
                values, CARRIER_READ_TIMEOUT_SECONDS, 10.0, minimum=0.1, maximum=120
            ),
            max_retries=int(number_setting(values, CARRIER_MAX_RETRIES, 2, minimum=0, maximum=5)),
        )


class HttpCarrier:
    """:class:`application.external.ShipmentService` over the carrier's HTTP API."""

    def __init__(self, settings: CarrierSettings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._session = session or requests.Session()
        self._headers = {"Accept": "application/json"}
        if settings.api_key is not None:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> HttpCarrier:
        return cls(CarrierSettings.from_environment(env))

    def create_shipment(
        self, *, order_id: str, lines: Sequence[OrderLine], idempotency_key: str
    ) -> str:
        body = {
            "order_id": order_id,
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in lines],
        }
        payload, replayed = self._post(
            "/shipments",
            body,
            order_id=order_id,
            action="create shipment",
            idempotency_key=idempotency_key,
        )
        shipment_id = payload.get("shipment_id")
        if not isinstance(shipment_id, str) or not shipment_id:
            raise ShipmentTransientError(
                f"carrier returned no shipment_id for create shipment of order {order_id}; "
                "retry with the same idempotency key to get the stored response",
                order_id=order_id,
            )
        logger.info(
            "Shipment created",
            extra={
                "order_id": order_id,
                "shipment_id": shipment_id,
                "lines": len(lines),
                "replayed": replayed,
            },
        )
        return shipment_id

    def cancel_shipment(self, *, order_id: str, shipment_id: str) -> None:
        self._post(
            f"/shipments/{quote(shipment_id, safe='')}/cancel",
            None,
            order_id=order_id,
            action=f"cancel shipment {shipment_id}",
            idempotency_key=None,
        )
        logger.info("Shipment cancelled", extra={"order_id": order_id, "shipment_id": shipment_id})

    def _post(
        self,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        order_id: str,
        action: str,
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        """Send one request, retrying transient failures with the same key.

        Returns the JSON body and whether the carrier replayed a stored response.
        """
        headers = dict(self._headers)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = self._settings.api_url + path
        timeout = (self._settings.connect_timeout, self._settings.read_timeout)
        retries = self._settings.max_retries

        for retry in range(retries + 1):
            retry_after: float | None = None
            try:
                response = self._session.post(url, json=body, headers=headers, timeout=timeout)
            except _TRANSPORT_ERRORS as error:
                cause = f"{type(error).__name__} from {url}"
            else:
                if 200 <= response.status_code < 300:
                    replayed = response.headers.get("Idempotent-Replayed") == "true"
                    return _json_object(response, order_id=order_id, action=action), replayed
                if response.status_code < 500 and response.status_code not in _RETRYABLE_STATUSES:
                    raise _rejected(response, order_id=order_id, action=action)
                cause = f"HTTP {response.status_code} {_error_text(response)}"
                retry_after = _retry_after_seconds(response)

            if retry == retries:
                logger.warning(
                    "Carrier request failed transiently; no retries left",
                    extra={
                        "order_id": order_id,
                        "action": action,
                        "cause": cause,
                        "retries": retries,
                    },
                )
                raise ShipmentTransientError(
                    f"carrier {action} for order {order_id} failed after {retries + 1} "
                    f"tries: {cause}; the outcome is unknown, retry later with the same "
                    "idempotency key",
                    order_id=order_id,
                )
            delay = self._delay(retry + 1, retry_after)
            logger.warning(
                "Retrying a carrier request with the same idempotency key",
                extra={
                    "order_id": order_id,
                    "action": action,
                    "cause": cause,
                    "retry": retry + 1,
                    "delay_seconds": delay,
                },
            )
            time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _delay(self, retry: int, retry_after: float | None) -> float:
        backoff = self._settings.retry_initial_delay * 2.0 ** (retry - 1)
        backoff *= random.uniform(0.5, 1.0)  # jitter spreads out concurrent retries
        wanted = max(backoff, retry_after or 0.0)
        return min(wanted, self._settings.retry_max_delay)


def _json_object(response: requests.Response, *, order_id: str, action: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ShipmentTransientError(
            f"carrier {action} for order {order_id} returned HTTP {response.status_code} "
            "without a JSON object; retry with the same idempotency key",
            order_id=order_id,
        )
    return payload


def _rejected(response: requests.Response, *, order_id: str, action: str) -> ShipmentRejectedError:
    advice = {
        401: "check CARRIER_API_KEY",
        403: "check CARRIER_API_KEY and its permissions",
        404: "the shipment or endpoint does not exist; check CARRIER_API_URL and the id",
        409: "the shipment is past the point where this is allowed",
        422: "fix the request; sending it unchanged fails again",
    }.get(response.status_code, "sending the same request again fails again")
    error = ShipmentRejectedError(
        f"carrier rejected {action} for order {order_id}: HTTP {response.status_code} "
        f"{_error_text(response)}; {advice}",
        order_id=order_id,
    )
    logger.error(
        "Carrier rejected a request",
        extra={"order_id": order_id, "action": action, "http_status": response.status_code},
    )
    return error


def _error_text(response: requests.Response) -> str:
    """Summarize the carrier's error body as ``code: message``, at most 300 characters."""
    try:
        error = response.json().get("error", {})
        text = f"{error.get('code')}: {error.get('message')}"
        if error.get("fields"):
            text += f" {error['fields']}"
    except (ValueError, AttributeError):
        text = response.text
    return text[:300]


def _retry_after_seconds(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date, or absent: use the backoff
