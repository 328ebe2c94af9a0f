"""Audit records of ACTS runs: the decision log the engine writes and the report a person reads.

Replay and audit diff compose runs, so they live in :mod:`backend.runs`.
"""
