"""Query parameters as a model: an unknown one is refused (422), and one left empty is absent.

`?currency=&limit=&cursor=` is how the contract writes the history's route, and what a form or a
client that sends its unset values gives: an empty value means "no filter", never a currency or
a number called "".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class QueryParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            # An unknown parameter stays, to be refused, empty or not.
            fields = cls.model_fields
            return {k: v for k, v in raw.items() if not (v == "" and k in fields)}
        return raw
