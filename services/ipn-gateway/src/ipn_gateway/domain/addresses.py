"""Destination addresses checked with their checksums, so a mistyped address is refused before any
money is locked.

Bitcoin and Litecoin: segwit bech32 (v0) / bech32m (v1+) or base58check with the network's version
bytes; Tron: base58check with version 0x41; EVM: EIP-55 when the hex is mixed case (all lower or
all upper case carries no checksum); Solana: 32 bytes of base58 (its addresses have no checksum).
The codecs come from embit (bech32/bech32m, base58) and eth-hash (keccak-256).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

from embit import base58, bech32
from eth_hash.auto import keccak

_HEX_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_BASE58_ALPHABET: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")


def _segwit(hrp: str) -> Callable[[str], bool]:
    def check(address: str) -> bool:
        if not address.lower().startswith(hrp + "1") or len(address) > 90:
            return False
        try:
            version, program = bech32.decode(hrp, address)
        except (ValueError, TypeError, IndexError):
            return False
        return version is not None and program is not None

    return check


def _base58check(*versions: int) -> Callable[[str], bool]:
    def check(address: str) -> bool:
        if not 25 <= len(address) <= 35 or not _BASE58_ALPHABET.fullmatch(address):
            return False
        try:
            payload: bytes = base58.decode_check(address)
        except (ValueError, TypeError, IndexError):
            return False
        return len(payload) == 21 and payload[0] in versions

    return check


def eip55(address: str) -> bool:
    """A 0x address whose letters' case, if mixed, is its EIP-55 checksum."""
    if not _HEX_ADDRESS.fullmatch(address):
        return False
    hex_part = address[2:]
    if hex_part == hex_part.lower() or hex_part == hex_part.upper():
        return True
    digest = keccak(hex_part.lower().encode("ascii")).hex()
    return all(
        char == (char.upper() if int(digest[i], 16) >= 8 else char.lower())
        for i, char in enumerate(hex_part)
    )


def solana(address: str) -> bool:
    if not 32 <= len(address) <= 44 or not _BASE58_ALPHABET.fullmatch(address):
        return False
    try:
        return len(base58.decode(address)) == 32
    except (ValueError, TypeError, IndexError):
        return False


def _any(*checks: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda address: any(check(address) for check in checks)


_bitcoin = _any(_segwit("bc"), _base58check(0x00, 0x05))
_litecoin = _any(_segwit("ltc"), _base58check(0x30, 0x32, 0x05))
_tron = _base58check(0x41)

ADDRESS_CHECKS: Final[Mapping[str, Callable[[str], bool]]] = {
    "BTC": _bitcoin,
    "LTC": _litecoin,
    "ETH": eip55,
    "USDC": _any(eip55, solana),
    "USDT": _any(eip55, _tron),
    "TRX": _tron,
    "SOL": solana,
}


def valid_address(currency: str, address: object) -> bool:
    """Whether `address` is a well-formed address with a correct checksum for `currency`."""
    check = ADDRESS_CHECKS.get(currency)
    return check is not None and isinstance(address, str) and check(address)
