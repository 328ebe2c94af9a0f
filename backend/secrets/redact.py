"""Redaction: registered secrets are replaced in log records, error messages and crash output.

A secret is registered as soon as it is read (from a prompt, stdin or the credential store); from
then on every log record passing a handler of the root logger, every ``acts: error:`` line and every
uncaught traceback printed by the ``acts`` entry point has it replaced by ``<redacted>``.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

REDACTED = "<redacted>"
MIN_SECRET_CHARS = 8  # shorter strings would redact ordinary words


class Redactor:
    """The set of secrets to hide, and the replacement of each in a text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, secret: str) -> None:
        """Hide ``secret`` from now on (ignored when shorter than :data:`MIN_SECRET_CHARS`)."""
        if len(secret) >= MIN_SECRET_CHARS:
            with self._lock:
                self._secrets.add(secret)

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced (longest first)."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text


REDACTOR = Redactor()


def register_secret(secret: str) -> None:
    """Hide ``secret`` in every log, error line and traceback of this process."""
    REDACTOR.register(secret)


def redact(text: str) -> str:
    """Return ``text`` without any registered secret."""
    return REDACTOR.redact(text)


class RedactingFilter(logging.Filter):
    """A logging filter that renders the record, then redacts it."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redactor.redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add the redacting filter to ``logger`` (default: the root logger) and each of its handlers."""
    target = logger if logger is not None else logging.getLogger()
    found = [f for f in target.filters if isinstance(f, RedactingFilter)]
    chosen = found[0] if found else RedactingFilter()
    if not found:
        target.addFilter(chosen)
    for handler in target.handlers:
        if chosen not in handler.filters:
            handler.addFilter(chosen)
    return chosen


Hook = Callable[[type[BaseException], BaseException, TracebackType | None], None]


def redacting_excepthook(stream: TextIO | None = None) -> Hook:
    """Return an excepthook that prints the traceback with every secret redacted."""

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        target = stream if stream is not None else sys.stderr
        target.write(redact("".join(traceback.format_exception(kind, value, tb))))

    return hook
