"""The data path: subscriptions feeding the ledger, freshness, the cache and market data."""
