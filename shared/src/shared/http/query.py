"""Query parameters as a model: an unknown one is refused (422), and one left empty is absent.

`?currency=&limit=&cursor=` is how the contract writes the history's route, and what a form or a
client that sends its unset values gives: an empty value means "no filter", never a currency or
a number called "".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

_KEPT_OUTSIDE: tuple[str, ...] = ("title", "description", "default", "examples")


def _empty_allowed(schema: dict[str, Any]) -> None:
    """The parameter's schema says an empty value is valid too (documented as clients see it)."""
    value = {k: v for k, v in schema.items() if k not in _KEPT_OUTSIDE}
    kept = {k: v for k, v in schema.items() if k in _KEPT_OUTSIDE}
    schema.clear()
    schema.update(kept)
    alternatives = value["anyOf"] if set(value) == {"anyOf"} else [value]
    schema["anyOf"] = [*alternatives, {"type": "string", "maxLength": 0}]


class QueryParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # FastAPI documents each parameter from its field: each says that empty is absent.
        for field in cls.model_fields.values():
            field.json_schema_extra = _empty_allowed

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            # An unknown parameter stays, to be refused, empty or not.
            fields = cls.model_fields
            return {k: v for k, v in raw.items() if not (v == "" and k in fields)}
        return raw
