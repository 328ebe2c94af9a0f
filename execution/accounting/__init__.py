"""Accounting: cash-only portfolio and ledger."""
