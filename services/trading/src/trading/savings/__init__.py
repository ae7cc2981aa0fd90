"""Savings: products per currency, transfers between a user's wallet and savings, daily interest."""
