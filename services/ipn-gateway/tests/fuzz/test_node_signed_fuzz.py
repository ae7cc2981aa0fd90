"""Random IPN bodies signed by Node.js with NOWPayments' own recipe, verified by the gateway.

The bodies are generated here (seeded, so every run is the same) with numbers in every spelling
JSON allows (exponents, trailing zeros, huge and tiny magnitudes, -0), keys that JavaScript
orders specially (integer-like ones, non-ASCII, astral characters) and nested arrays; Node signs
them; the gateway must compute the same canonical text and accept exactly those signatures.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest

from ipn_gateway.domain.js_json import js_canonical, parse_json
from ipn_gateway.domain.signature import signature_matches

NODE: Final = shutil.which("node")
SIGNER: Final = Path(__file__).with_name("nowpayments_signer.js")
SECRET: Final = "fuzz-ipn-secret-ü"
SEED: Final = 20261130
BODIES: Final = 400

KEYS: Final = [
    "payment_id", "payment_status", "pay_amount", "actually_paid", "outcome_amount", "fee",
    "order_id", "0", "1", "10", "2", "007", "-1", "4294967294", "4294967295", "a", "B", "_",
    "é", "Ω", "𝄞", "ﬀ", "", " ", "key with space", "__proto__x", "depositFee",
]  # fmt: skip


def number_text(rng: random.Random) -> str:
    """A JSON number in one of the spellings a sender might use."""
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randrange(-(10**20), 10**20))
    if kind == 1:
        return f"{rng.randrange(10**9)}.{rng.randrange(10**8):0{rng.randrange(1, 9)}d}"
    if kind == 2:
        return f"{rng.randrange(1, 10**6)}e{rng.randrange(-30, 30)}"
    if kind == 3:
        return (
            f"{rng.randrange(1, 999)}.{rng.randrange(1000)}E{rng.choice('+-')}{rng.randrange(25)}"
        )
    if kind == 4:
        return rng.choice(["0", "-0", "0.0", "-0.0", "0e0", "1e21", "1e-7", "123e-20", "5e-324"])
    if kind == 5:
        return repr(rng.uniform(-1e6, 1e6))
    if kind == 6:
        return str(rng.randrange(2**53 - 5, 2**53 + 5))  # beyond exact doubles
    if kind == 7:
        return f"{rng.randrange(10**17, 10**18)}{'0' * rng.randrange(5)}.5"
    return f"0.{'0' * rng.randrange(10)}{rng.randrange(1, 10**6)}"


def string(rng: random.Random) -> str:
    alphabet = 'abcXYZ09 "\\/\b\f\n\r\t\x00\x1f\x7f\u2028\u2029éΩ𝄞\ud800\udfff'
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))


def value_text(rng: random.Random, depth: int) -> str:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind in (0, 1):
        return number_text(rng)
    if kind == 2:
        text = string(rng)
        # A lone surrogate can only travel escaped: raw, it is not UTF-8.
        lone = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return json.dumps(text, ensure_ascii=lone or rng.random() < 0.5)
    if kind == 3:
        return rng.choice(["true", "false", "null"])
    if kind == 4:
        return json.dumps(rng.choice(["finished", "waiting", "btc", "usdttrc20"]))
    if kind in (5, 6):
        return object_text(rng, depth + 1)
    return "[" + ",".join(value_text(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"


def object_text(rng: random.Random, depth: int = 0) -> str:
    keys = rng.sample(KEYS, rng.randrange(1, 8))
    members = [
        f"{json.dumps(k, ensure_ascii=rng.random() < 0.5)}{' ' * rng.randrange(2)}:"
        f"{value_text(rng, depth)}"
        for k in keys
    ]
    return "{" + ("," + " " * rng.randrange(2)).join(members) + "}"


def node_sign(bodies: list[str]) -> list[dict[str, Any]]:
    assert NODE is not None
    requests = "".join(json.dumps({"secret": SECRET, "body": b}) + "\n" for b in bodies)
    done = subprocess.run(
        [NODE, str(SIGNER)], input=requests, capture_output=True, text=True, timeout=120, check=True
    )
    # split("\n"), not splitlines(): U+2028 inside a line is not a line break to Node.
    return [json.loads(line) for line in done.stdout.split("\n") if line]


@pytest.mark.skipif(NODE is None, reason="node is not installed: the signer needs Node.js")
def test_random_bodies_signed_by_node_verify_and_tampered_ones_do_not() -> None:
    rng = random.Random(SEED)
    bodies = [object_text(rng) for _ in range(BODIES)]
    signed = node_sign(bodies)
    assert len(signed) == BODIES
    numbers = 0
    for raw, node in zip(bodies, signed, strict=True):
        body = parse_json(raw.encode())
        assert js_canonical(body) == node["canonical"], raw
        assert signature_matches(body, node["signature"], SECRET), raw
        assert not signature_matches(body, node["signature"], SECRET + "x"), raw
        numbers += raw.count("e") + raw.count(".")
    assert numbers > BODIES  # the bodies really are full of awkward numbers
    # A field added to a body must not verify under the original signature.
    for raw, node in zip(bodies, signed, strict=True):
        tampered = parse_json((raw[:-1] + ',"zz_added":1}').encode())
        assert not signature_matches(tampered, node["signature"], SECRET), raw
