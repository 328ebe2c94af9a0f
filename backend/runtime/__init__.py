"""Runtimes that run the engine event by event against a feed and persist their state (paper for now)."""
