"""The trading service: prices, swaps, express buy, spot order book, savings and referral commissions."""
