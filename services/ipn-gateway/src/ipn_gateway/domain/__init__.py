"""Pure rules of the gateway: IPN signatures and statuses, deposits, withdrawals. No I/O here."""
