"""What travels on trading.orders (key = market): the matcher of a market applies them in order."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OrderMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # locked: the wallet applied the order's lock, it may enter the book.
    # cancel: the owner asked to cancel it (resting or still waiting for its lock).
    kind: Literal["locked", "cancel"]
    order_id: str = Field(min_length=1, max_length=200)
    pair: str = Field(min_length=1, max_length=20)
    # why a cancel: the owner asked (user_cancelled) or its time ran out (expired)
    reason: Literal["user_cancelled", "expired"] = "user_cancelled"


def encode(message: OrderMessage) -> bytes:
    return message.model_dump_json().encode()


def decode(raw: bytes) -> OrderMessage:
    return OrderMessage.model_validate_json(raw)
