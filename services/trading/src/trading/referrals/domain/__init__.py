"""The referral rules, free of I/O: binding, which fee a transaction charges to whom, commissions."""
