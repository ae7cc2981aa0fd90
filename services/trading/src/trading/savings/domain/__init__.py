"""The savings rules, free of I/O: interest amounts, accrual keys, balances over time, transfers."""
