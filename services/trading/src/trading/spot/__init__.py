"""Spot trading: a limit order book per market, one matcher per market, every fill settled by the wallet."""
