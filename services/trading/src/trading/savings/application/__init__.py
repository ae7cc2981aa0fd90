"""Savings use cases: transfers, positions, the daily accrual and its scheduler."""
