"""NOWPayments IPN signatures: HMAC-SHA512 of the JavaScript canonical form of the body."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

from ipn_gateway.domain.errors import IpnRejected
from ipn_gateway.domain.js_json import JsonValue, js_canonical, parse_json
from shared.text import unencodable_at

_HEX_SHA512: Final = re.compile(r"[0-9a-f]{128}")


def canonical_body(body: JsonValue) -> bytes:
    """The bytes NOWPayments signs: `JSON.stringify(sortObject(body))` in UTF-8."""
    return js_canonical(body).encode("utf-8")


def sign(body: JsonValue, secret: str) -> str:
    """Lower-case hex HMAC-SHA512 of the canonical body, as in the `x-nowpayments-sig` header."""
    return hmac.new(secret.encode("utf-8"), canonical_body(body), hashlib.sha512).hexdigest()


def signature_matches(body: JsonValue, signature: str | None, secret: str) -> bool:
    if not secret or signature is None:
        return False
    provided = signature.strip()
    if not _HEX_SHA512.fullmatch(provided):
        return False
    return hmac.compare_digest(sign(body, secret).encode("ascii"), provided.encode("ascii"))


def verify_ipn(raw_body: bytes, signature: str | None, secret: str) -> dict[str, JsonValue]:
    """The parsed body of a correctly signed IPN whose text can be stored; raises IpnRejected
    otherwise (`signed_body`, then `check_text`)."""
    return check_text(signed_body(raw_body, signature, secret))


def signed_body(raw_body: bytes, signature: str | None, secret: str) -> dict[str, JsonValue]:
    """The parsed body if its signature matches; raises IpnRejected (`invalid_signature`)
    otherwise.

    The body is parsed before the signature is checked because the signature covers the parsed
    (re-serialised) form, not the raw bytes; nothing in it is trusted until the check passes.
    """
    if signature is None or not signature.strip():
        raise IpnRejected("invalid_signature", "x-nowpayments-sig header is missing")
    try:
        body = parse_json(raw_body)
    except IpnRejected as refused:
        # No signature covers a body that is not JSON: the contract's "bad signature" (401).
        raise IpnRejected(
            "invalid_signature", f"no signature can match: {refused.message}"
        ) from None
    if not isinstance(body, dict):
        raise IpnRejected("invalid_signature", "no signature can match: the body is not an object")
    if not signature_matches(body, signature, secret):
        raise IpnRejected("invalid_signature", "x-nowpayments-sig does not match the body")
    return body


def check_text(body: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The signed body, if every text in it can be encoded; raises IpnRejected (`invalid_text`)."""
    where = unencodable_at(body)
    if where is not None:
        # Signed, but holding a lone UTF-16 surrogate: nothing could store or log it.
        raise IpnRejected("invalid_text", f"{where[:200]}: holds text UTF-8 cannot encode")
    return body
