"""Execution: risk gates at admission, brokers, accounting."""
