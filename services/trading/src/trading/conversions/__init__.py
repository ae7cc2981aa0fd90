"""Conversions against the platform's own liquidity: swaps (crypto → crypto), express buy
(fiat → crypto) and the admin's liquidity funding. One quote, one wallet `exchange` command."""
