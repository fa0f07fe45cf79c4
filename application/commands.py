"""Commands as the API receives them, validated with pydantic before the domain sees them."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from domain.money import CURRENCIES
from domain.order import (
    ID_PATTERN,
    MAX_LINES,
    MAX_PAYMENT_METHOD_LENGTH,
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    SKU_PATTERN,
    OrderLine,
)

MAX_IDEMPOTENCY_KEY_LENGTH = 255

Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN.pattern)]
EntityId = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
PaymentMethod = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_PAYMENT_METHOD_LENGTH, pattern=r"^[A-Za-z0-9_\-]+$"
    ),
]
IdempotencyKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LENGTH, pattern=r"^[!-~]+$"),
]


class OrderLineInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Sku
    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
    unit_price: Annotated[
        int,
        Field(strict=True, ge=0, le=MAX_UNIT_PRICE, description="price in minor units"),
    ]

    def to_domain(self) -> OrderLine:
        return OrderLine(sku=self.sku, quantity=self.quantity, unit_price=self.unit_price)


class PlaceOrder(BaseModel):
    """Body of ``POST /orders``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: EntityId
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    payment_method: PaymentMethod
    lines: Annotated[list[OrderLineInput], Field(min_length=1, max_length=MAX_LINES)]

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            raise ValueError(f"unknown currency {value!r}; use an active ISO 4217 code")
        return value

    @field_validator("lines")
    @classmethod
    def _unique_skus(cls, lines: list[OrderLineInput]) -> list[OrderLineInput]:
        seen: set[str] = set()
        for line in lines:
            if line.sku in seen:
                raise ValueError(f"sku {line.sku!r} appears on more than one line")
            seen.add(line.sku)
        return lines

    def request_hash(self) -> str:
        """Fingerprint of the request, to tell a retry from a reused idempotency key."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
