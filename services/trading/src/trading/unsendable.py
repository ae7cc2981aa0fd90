"""A wallet command that cannot be built from a stored record (a value the command model refuses):
the relays that send stored commands again log it with this reason and go on with the others."""

from __future__ import annotations

from pydantic import ValidationError

from shared.messaging.commands import reason_for


def unsendable_reason(error: ValueError) -> str:
    """Why the command could not be built, in one line: the command model's reason and detail
    (`invalid_amount: amount_too_precise: amount: …`), else the error's own text."""
    if isinstance(error, ValidationError):
        reason, detail = reason_for(error)
        return f"{reason}: {detail}"
    return str(error) or type(error).__name__
