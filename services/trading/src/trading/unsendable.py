"""A wallet command that cannot be built from a stored record (a value the command model refuses):
the relays that send stored commands again log it with this reason and go on with the others."""

from __future__ import annotations

from shared.messaging import unsendable_reason

__all__ = ["unsendable_reason"]
