"""Kraken through ccxt: the one client factory, error classes, and the API-key permission policy."""
