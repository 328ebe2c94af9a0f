"""Secrets: the OS credential store (keyring) and redaction of secrets from logs and error output."""
