"""Referral use cases: binding, the summary and paying commissions from wallet.events."""
