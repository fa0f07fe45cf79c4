"""REST API handler: API Gateway proxy events in, JSON responses out.

Routes parse and validate input (Powertools with pydantic), call the
application, and shape the response. Errors follow one contract: 400 for
malformed JSON, 422 with a list of field errors for invalid input,
``{"message": ...}`` for everything else.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from adapters.composition import build_order_services
from adapters.read_models import MAX_CURSOR_LENGTH, MAX_PAGE_SIZE
from application import inventory
from application.commands import IdempotencyKey, PlaceOrder, Sku
from application.errors import (
    CommitTooLargeError,
    IdempotencyKeyReusedError,
    OrderNotFoundError,
    TransientStoreError,
    VersionConflictError,
)
from application.inventory import SkuNotFoundError
from application.ports import InvalidCursorError
from domain.errors import DomainError, InvalidTransitionError
from domain.inventory import MAX_STOCK
from domain.order import ID_PATTERN, MAX_REASON_LENGTH, OrderStatus

logger = Logger(service="orders")
services = build_order_services()
app = APIGatewayRestResolver(enable_validation=True)

MAX_BODY_BYTES = 64 * 1024
DEFAULT_PAGE_SIZE = 20

CustomerId = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers
    )


def _errors(status: int, errors: list[dict[str, Any]]) -> Response[Any]:
    return _json(status, {"errors": errors})


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return _json(status, {"message": message}, headers)


class QueryParameterError(ValueError):
    """Query parameters that are each valid but do not make a query together."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class CustomerNotFoundError(LookupError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id!r} has no orders")


def _parse_order_id(order_id: str) -> UUID:
    try:
        return UUID(order_id)
    except ValueError:
        raise OrderNotFoundError(order_id) from None


# Routes ---------------------------------------------------------------------------


@app.post("/orders")
def place_order(
    command: Annotated[PlaceOrder, Body()],
    idempotency_key: Annotated[IdempotencyKey | None, Header(alias="Idempotency-Key")] = None,
) -> Response[Any]:
    placed = services.orders.place_order(command, idempotency_key=idempotency_key)
    logger.info(
        "order placed" if not placed.replayed else "order placement replayed",
        extra={
            "order_id": placed.order_id,
            "stream_id": placed.order_id,
            "version": 1,
            "command_id": placed.command_id,
            "customer_id": command.customer_id,
            "lines": len(command.lines),
        },
    )
    return _json(
        202,
        {"order_id": placed.order_id, "status": "PLACED"},
        {"Location": f"/orders/{placed.order_id}"},
    )


@app.get("/orders")
def list_orders(
    status: Annotated[OrderStatus | None, Query()] = None,
    needs_attention: Annotated[bool | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Response[Any]:
    """Operators' lists: orders with one status, newest first, or the orders that need
    attention, longest flagged first. Listing every order would need a Scan, so one of
    the two filters is required."""
    if (status is None) == (needs_attention is None) or needs_attention is False:
        raise QueryParameterError(
            "status" if needs_attention is None else "needs_attention",
            "pass either status=<STATUS> or needs_attention=true",
        )
    if status is not None:
        page = services.read_models.list_orders_by_status(status.value, limit, cursor)
    else:
        page = services.read_models.list_orders_needing_attention(limit, cursor)
    return _json(200, {"orders": list(page.items), "next_cursor": page.next_cursor})


@app.get("/orders/<order_id>")
def get_order(order_id: Annotated[str, Path()]) -> Response[Any]:
    row = services.read_models.get_order(str(_parse_order_id(order_id)))
    if row is None:
        raise OrderNotFoundError(order_id)
    return _json(200, row)


@app.get("/orders/<order_id>/events")
def get_order_events(order_id: Annotated[str, Path()]) -> Response[Any]:
    events = services.orders.order_history(_parse_order_id(order_id))
    return _json(200, {"events": events})


@app.get("/customers/<customer_id>/orders")
def list_customer_orders(
    customer_id: Annotated[CustomerId, Path()],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Response[Any]:
    page = services.read_models.list_customer_orders(customer_id, limit, cursor)
    return _json(200, {"orders": list(page.items), "next_cursor": page.next_cursor})


@app.get("/customers/<customer_id>/stats")
def get_customer_stats(customer_id: Annotated[CustomerId, Path()]) -> Response[Any]:
    stats = services.read_models.get_customer_stats(customer_id)
    if stats is None:
        raise CustomerNotFoundError(customer_id)
    return _json(200, stats)


class CancelOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON_LENGTH)] = (
        "cancelled by the customer"
    )


@app.post("/orders/<order_id>/cancel")
def cancel_order(
    order_id: Annotated[str, Path()], command: Annotated[CancelOrder | None, Body()] = None
) -> Response[Any]:
    reason = (command or CancelOrder()).reason
    version = services.orders.cancel_order(_parse_order_id(order_id), reason)
    logger.info(
        "order cancelled", extra={"order_id": order_id, "stream_id": order_id, "version": version}
    )
    return _json(202, {"order_id": order_id, "status": "CANCELLED"})


class Restock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_STOCK)]


class StockCount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_hand: Annotated[int, Field(strict=True, ge=0, le=MAX_STOCK)]


@app.post("/inventory/<sku>/restock")
def restock(sku: Annotated[Sku, Path()], command: Annotated[Restock, Body()]) -> Response[Any]:
    level = inventory.restock(services.orders, sku, command.quantity)
    logger.info(
        "stock added", extra={"sku": sku, "quantity": command.quantity, "version": level["version"]}
    )
    return _json(200, level)


@app.put("/inventory/<sku>")
def count_stock(
    sku: Annotated[Sku, Path()], command: Annotated[StockCount, Body()]
) -> Response[Any]:
    level = inventory.count_stock(services.orders, sku, command.on_hand)
    logger.info(
        "stock counted", extra={"sku": sku, "on_hand": command.on_hand, "version": level["version"]}
    )
    return _json(200, level)


@app.get("/inventory/<sku>")
def get_stock(sku: Annotated[Sku, Path()]) -> Response[Any]:
    """Return stock from the inventory-levels read model. It trails the commands by the
    stream's delay, about a second; the commands return the level they produced."""
    level = services.read_models.get_stock(sku)
    if level is None:
        raise SkuNotFoundError(sku)
    return _json(200, level)


@app.get("/health")
def health() -> Response[Any]:
    return _json(200, {"status": "ok"})


# Errors ---------------------------------------------------------------------------


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response[Any]:
    details = error.errors()
    if any(detail.get("type") == "json_invalid" for detail in details):
        return _errors(400, [{"loc": ["body"], "msg": "request body is not valid JSON"}])
    errors = [
        {"loc": [str(part) for part in detail.get("loc", ())], "msg": detail.get("msg", "")}
        for detail in details
    ]
    return _errors(422, errors)


@app.exception_handler(DomainError)
def _domain_rule_broken(error: DomainError) -> Response[Any]:
    location = ["body", *error.field.split(".")] if error.field else ["body"]
    return _errors(422, [{"loc": location, "msg": str(error)}])


@app.exception_handler(IdempotencyKeyReusedError)
def _idempotency_key_reused(error: IdempotencyKeyReusedError) -> Response[Any]:
    return _errors(422, [{"loc": ["header", "Idempotency-Key"], "msg": str(error)}])


@app.exception_handler(InvalidCursorError)
def _invalid_cursor(error: InvalidCursorError) -> Response[Any]:
    return _errors(422, [{"loc": ["query", "cursor"], "msg": str(error)}])


@app.exception_handler(QueryParameterError)
def _invalid_query(error: QueryParameterError) -> Response[Any]:
    return _errors(422, [{"loc": ["query", error.name], "msg": str(error)}])


@app.exception_handler(CustomerNotFoundError)
def _customer_not_found(error: CustomerNotFoundError) -> Response[Any]:
    return _message(404, str(error))


@app.exception_handler(InvalidTransitionError)
def _invalid_transition(error: InvalidTransitionError) -> Response[Any]:
    return _message(409, str(error))


@app.exception_handler(SkuNotFoundError)
def _sku_not_found(error: SkuNotFoundError) -> Response[Any]:
    return _message(404, str(error))


@app.exception_handler(OrderNotFoundError)
def _order_not_found(error: OrderNotFoundError) -> Response[Any]:
    return _message(404, str(error))


@app.exception_handler(VersionConflictError)
def _conflict(error: VersionConflictError) -> Response[Any]:
    return _message(409, str(error))


@app.exception_handler(CommitTooLargeError)
def _too_large(error: CommitTooLargeError) -> Response[Any]:
    return _message(413, str(error))


@app.exception_handler(TransientStoreError)
def _busy(error: TransientStoreError) -> Response[Any]:
    logger.warning("store busy", extra={"error": str(error)})
    return _message(503, "the order store is busy; retry after a second", {"Retry-After": "1"})


@app.not_found
def _route_not_found(_: Exception) -> Response[Any]:
    return _message(404, f"no route for {app.current_event.http_method} {app.current_event.path}")


# Entry point ----------------------------------------------------------------------


def _body_too_large(event: dict[str, Any]) -> bool:
    body = event.get("body") or ""
    # A base64 body is a third larger than its bytes; compare the decoded size.
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
    return size > MAX_BODY_BYTES


def _non_object_body_error(event: dict[str, Any]) -> dict[str, Any] | None:
    """Reject a JSON body that is not an object before validation sees it.

    NOTE: Powertools 3.37 validation unwraps a list body to its first element
    for a model parameter, so ``[{...}]`` would pass as ``{...}`` without this.
    """
    body = event.get("body")
    if not body or event.get("isBase64Encoded") or body.lstrip().startswith("{"):
        return None
    try:
        json.loads(body)
    except ValueError:
        return None  # the validation step reports malformed JSON as 400
    problem = {"errors": [{"loc": ["body"], "msg": "request body must be a JSON object"}]}
    return {
        "statusCode": 422,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(problem),
    }


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if _body_too_large(event):
        return {
            "statusCode": 413,
            "headers": {"Content-Type": content_types.APPLICATION_JSON},
            "body": json.dumps({"message": f"request body exceeds {MAX_BODY_BYTES} bytes"}),
        }
    rejected = _non_object_body_error(event)
    if rejected is not None:
        return rejected
    return app.resolve(event, context)
