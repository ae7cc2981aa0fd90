"""Prices: the feed (built-in walk, CoinGecko or Binance) publishing on market.prices, the
latest-price book every process keeps from that topic, and the price API."""
