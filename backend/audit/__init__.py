"""Audit artefacts for ACTS runs: reports a person reads to check what a backtest did."""
