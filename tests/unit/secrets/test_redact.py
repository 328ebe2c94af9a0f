"""Registered secrets are replaced in log records, error lines and tracebacks."""

from __future__ import annotations

import io
import logging
import sys

from backend.secrets.redact import (
    REDACTED,
    RedactingFilter,
    Redactor,
    install_log_redaction,
    redact,
    redacting_excepthook,
    register_secret,
)


def test_redactor_hides_long_secrets_longest_first() -> None:
    redactor = Redactor()
    redactor.register("short")  # too short to register: ordinary words stay readable
    redactor.register("abcdefgh")
    redactor.register("abcdefgh-ijkl")
    assert redactor.redact("a short abcdefgh-ijkl and abcdefgh") == f"a short {REDACTED} and {REDACTED}"


def test_log_records_and_exceptions_are_redacted() -> None:
    register_secret("CANARY-log-0123456789")
    logger = logging.getLogger("acts.test.redact")
    logger.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    chosen = install_log_redaction(logger)
    assert install_log_redaction(logger) is chosen and handler.filters == [chosen]
    logger.warning("key %s in use", "CANARY-log-0123456789")
    try:
        raise ValueError("bad CANARY-log-0123456789")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert "CANARY-log" not in text and text.count(REDACTED) == 3  # the message, the source line and the exception
    assert isinstance(chosen, RedactingFilter)
    logger.removeHandler(handler)


def test_excepthook_prints_a_redacted_traceback() -> None:
    register_secret("CANARY-crash-0123456789")
    stream = io.StringIO()
    try:
        raise RuntimeError("crash with CANARY-crash-0123456789")
    except RuntimeError as error:
        redacting_excepthook(stream)(type(error), error, error.__traceback__)
    assert "CANARY-crash" not in stream.getvalue() and "RuntimeError" in stream.getvalue()
    saved = sys.stderr
    sys.stderr = io.StringIO()
    try:
        redacting_excepthook()(RuntimeError, RuntimeError("x CANARY-crash-0123456789"), None)
        assert redact(sys.stderr.getvalue()).count(REDACTED) == 1
    finally:
        sys.stderr = saved
