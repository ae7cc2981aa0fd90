"""Price sources (built-in walk, CoinGecko, Binance), the market.prices codec and the pin store."""
