"""A local stand-in for the shipping carrier's HTTP API, served on 127.0.0.1.

Endpoints (JSON in and out):

- ``POST /shipments`` with ``{"order_id": "o-1", "lines": [{"sku": "MUG", "quantity": 2}]}``
  and an ``Idempotency-Key`` header returns 201 ``{"shipment_id": "shp_...", ...}``. The
  same key with the same body replays the first response with ``Idempotent-Replayed:
  true``. The same key with another body is a 422 ``idempotency_key_reused``.
- ``GET /shipments/{id}``, and ``POST /shipments/{id}/cancel``, which returns 200 for a
  created or cancelled shipment and 409 ``already_shipped`` once it has shipped.
- Invalid input is a 422 with ``{"error": {"code": "invalid_request", "fields": [...]}}``,
  malformed JSON a 400.
- With ``api_key`` set, requests need ``Authorization: Bearer <api_key>``, else 401.
- The admin API of :mod:`infra.local.fake_http`, plus ``POST /_fake/shipments/{id}/ship``
  to mark a shipment as having left the warehouse.

Start it with ``FakeCarrier(port=0).start()`` and point the adapter at it with
:meth:`FakeCarrier.environment`, or run ``python -m infra.local.fake_carrier --port 12112``.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import json
import re
import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from infra.local.fake_http import (
    BadRequestError,
    FakeHttpApi,
    Request,
    Response,
    StoredResponse,
    new_id,
)

MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
MAX_LINES: Final = 100
MAX_QUANTITY: Final = 10_000
MAX_ORDER_ID_LENGTH: Final = 128
SKU_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
RETRY_AFTER_SECONDS: Final = 1

_SHIPMENT_PATH = re.compile(r"^/shipments/([A-Za-z0-9_]+)$")
_CANCEL_PATH = re.compile(r"^/shipments/([A-Za-z0-9_]+)/cancel$")
_SHIP_PATH = re.compile(r"^/_fake/shipments/([A-Za-z0-9_]+)/ship$")


def carrier_error(status: int, code: str, message: str, **details: Any) -> Response:
    return Response(status, {"error": {"code": code, "message": message, **details}})


class FakeCarrier(FakeHttpApi):
    """In-memory shipments behind a small carrier API."""

    name = "fake-carrier"

    def __init__(self, port: int = 0, *, api_key: str | None = None) -> None:
        super().__init__(port)
        self._api_key = api_key
        self._shipments: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, StoredResponse] = {}

    def start(self) -> FakeCarrier:
        super().start()
        return self

    def __enter__(self) -> FakeCarrier:
        super().__enter__()
        return self

    def environment(self) -> dict[str, str]:
        """Return the environment variables that point the carrier adapter at this fake."""
        values = {"CARRIER_API_URL": self.url}
        if self._api_key is not None:
            values["CARRIER_API_KEY"] = self._api_key
        return values

    # --- Python admin API -------------------------------------------------------------

    def shipments(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._shipments.values()))

    def mark_shipped(self, shipment_id: str) -> None:
        """Record that the shipment left the warehouse, so it can no longer be cancelled."""
        with self.lock:
            shipment = self._shipments.get(shipment_id)
            if shipment is None:
                raise KeyError(f"no shipment {shipment_id!r} in the fake carrier")
            shipment["status"] = "shipped"

    # --- FakeHttpApi hooks ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"shipments": copy.deepcopy(list(self._shipments.values()))}

    def clear_state(self) -> None:
        self._shipments.clear()
        self._idempotent.clear()

    def authorize(self, request: Request) -> Response | None:
        if self._api_key is None:
            return None
        expected = f"Bearer {self._api_key}"
        if not hmac.compare_digest(request.headers.get("authorization", ""), expected):
            return carrier_error(
                401, "unauthorized", "missing or wrong API key; send 'Authorization: Bearer ...'"
            )
        return None

    def failure_response(self, mode: str) -> Response:
        if mode == "status_429":
            return Response(
                429,
                {
                    "error": {
                        "code": "rate_limited",
                        "message": "too many requests (failure injected by the fake)",
                    }
                },
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return carrier_error(
            500,
            "internal_error",
            "internal error (failure injected by the fake); nothing was changed",
        )

    def error_response(self, status: int, message: str) -> Response:
        code = "internal_error" if status >= 500 else "bad_request"
        return carrier_error(status, code, message)

    def handle_api(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/shipments":
            return self._create(request)
        if request.method == "GET":
            match = _SHIPMENT_PATH.match(request.path)
            if match is not None:
                return self._get(match.group(1))
        if request.method == "POST":
            match = _CANCEL_PATH.match(request.path)
            if match is not None:
                return self._cancel(match.group(1))
        return carrier_error(404, "not_found", f"no endpoint {request.method} {request.path}")

    def handle_admin_route(self, request: Request) -> Response | None:
        match = _SHIP_PATH.match(request.path)
        if request.method != "POST" or match is None:
            return None
        try:
            self.mark_shipped(match.group(1))
        except KeyError as error:
            return carrier_error(404, "not_found", str(error.args[0]))
        return Response(200, {"shipment_id": match.group(1), "status": "shipped"})

    # --- endpoints --------------------------------------------------------------------

    def _create(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key", "")
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return carrier_error(
                400,
                "idempotency_key_invalid",
                f"send an Idempotency-Key header of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} "
                f"characters (got {len(key)})",
            )
        try:
            payload = request.json()
        except BadRequestError as error:
            return carrier_error(400, "bad_request", str(error))
        fingerprint = (json.dumps(payload, sort_keys=True),)

        stored = self._idempotent.get(key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return carrier_error(
                    422,
                    "idempotency_key_reused",
                    f"Idempotency-Key {key!r} was first used with another body; use a new "
                    "key for a different shipment",
                )
            headers = {**stored.response.headers, "Idempotent-Replayed": "true"}
            return Response(stored.response.status, stored.response.body, headers)

        fields = _validation_errors(payload)
        if fields:
            return carrier_error(
                422, "invalid_request", "the shipment request is invalid", fields=fields
            )
        shipment = {
            "shipment_id": new_id("shp"),
            "order_id": payload["order_id"],
            "lines": [
                {"sku": line["sku"], "quantity": line["quantity"]} for line in payload["lines"]
            ],
            "status": "created",
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        self._shipments[shipment["shipment_id"]] = shipment
        response = Response(201, copy.deepcopy(shipment))
        self._idempotent[key] = StoredResponse(fingerprint, response, shipment["shipment_id"])
        return response

    def _get(self, shipment_id: str) -> Response:
        shipment = self._shipments.get(shipment_id)
        if shipment is None:
            return carrier_error(404, "not_found", f"no shipment {shipment_id!r}")
        return Response(200, copy.deepcopy(shipment))

    def _cancel(self, shipment_id: str) -> Response:
        shipment = self._shipments.get(shipment_id)
        if shipment is None:
            return carrier_error(404, "not_found", f"no shipment {shipment_id!r}")
        if shipment["status"] == "shipped":
            return carrier_error(
                409,
                "already_shipped",
                f"shipment {shipment_id} has shipped; it cannot be "
                "cancelled, arrange a return instead",
            )
        shipment["status"] = "cancelled"
        return Response(200, copy.deepcopy(shipment))


def _validation_errors(payload: Any) -> list[dict[str, Any]]:
    """List what is wrong with a shipment request, as ``{"loc": [...], "msg": ...}``."""
    if not isinstance(payload, dict):
        return [{"loc": [], "msg": "the body must be a JSON object"}]
    errors: list[dict[str, Any]] = []
    unknown = sorted(set(payload) - {"order_id", "lines"})
    errors.extend({"loc": [name], "msg": "unknown field"} for name in unknown)
    order_id = payload.get("order_id")
    if not isinstance(order_id, str) or not 1 <= len(order_id) <= MAX_ORDER_ID_LENGTH:
        errors.append(
            {
                "loc": ["order_id"],
                "msg": f"must be a string of 1 to {MAX_ORDER_ID_LENGTH} characters",
            }
        )
    lines = payload.get("lines")
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_LINES:
        errors.append({"loc": ["lines"], "msg": f"must be a list of 1 to {MAX_LINES} lines"})
        return errors
    for index, line in enumerate(lines):
        if not isinstance(line, dict):
            errors.append({"loc": ["lines", index], "msg": "must be an object"})
            continue
        sku = line.get("sku")
        if not isinstance(sku, str) or not SKU_PATTERN.match(sku):
            errors.append(
                {
                    "loc": ["lines", index, "sku"],
                    "msg": "must be 1 to 64 letters, digits, '.', '_' or '-'",
                }
            )
        quantity = line.get("quantity")
        if (
            isinstance(quantity, bool)
            or not isinstance(quantity, int)
            or not 1 <= quantity <= MAX_QUANTITY
        ):
            errors.append(
                {
                    "loc": ["lines", index, "quantity"],
                    "msg": f"must be an integer from 1 to {MAX_QUANTITY}",
                }
            )
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake carrier in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.fake_carrier", description=main.__doc__
    )
    parser.add_argument(
        "--port", type=int, default=12112, help="TCP port on 127.0.0.1 (0: any free port)"
    )
    arguments = parser.parse_args(argv)
    fake = FakeCarrier(port=arguments.port).start()
    for name, value in fake.environment().items():
        print(f"{name}={value}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
