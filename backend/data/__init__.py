"""Market data: the parquet lake, the seeded simulator and the loader for recorded candles."""
