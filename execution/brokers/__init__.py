"""Brokers: where admitted orders go (simulated now; Kraken later)."""
