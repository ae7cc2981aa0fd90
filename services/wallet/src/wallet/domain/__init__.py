"""The ledger's rules: pure functions over balances, no I/O."""
