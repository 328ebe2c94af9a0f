"""Free text that reaches a log: one rule to accept it, one rule to render it.

Every free-text field an operator types and a log keeps (a reason, an author, a name) goes through
:func:`checked_text`: it is trimmed, must be 1 to ``max_chars`` characters and must not hold a
control character (Unicode categories Cc, Cf, Zl, Zp, Cs: newlines, tabs, escapes, bidi overrides,
zero-width characters, line separators). :func:`attribution` applies it to the pair every
attributable action needs, an author and a reason, with the bounds below. The refusal names the
field, the bound, the offending character and the value, and is raised before anything is written.

:func:`display_text` renders stored text for a log line: every character the rule refuses, and the
backslash, is escaped, so a row stored before the rule existed (or written around it) still shows
on one line and can never look like another entry.

This module sits below every store (``backend.profiles``, ``backend.control``, the model registry,
the console) and imports nothing of them.
"""

from __future__ import annotations

import unicodedata

from backend.errors import ActsError, ConfigError

AUTHOR_MAX_CHARS = 64
REASON_MAX_CHARS = 500
SHOWN_CHARS = 600
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def is_refused(ch: str) -> bool:
    """Whether ``ch`` is a control or invisible formatting character (never allowed in logged text)."""
    return unicodedata.category(ch) in REFUSED_CATEGORIES


def _escaped(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def display_text(value: str) -> str:
    """Return ``value`` for one log line: refused characters and backslashes escaped, the rest as is."""
    return "".join(_escaped(ch) if ch == "\\" or is_refused(ch) else ch for ch in value)


def _shown(value: str) -> str:
    # A refusal quotes the value, escaped and cut at SHOWN_CHARS (a fuzzed megabyte must not flood the terminal).
    return display_text(value) if len(value) <= SHOWN_CHARS else display_text(value[:SHOWN_CHARS]) + "..."


def checked_text(field: str, value: object, max_chars: int, error: type[ActsError] = ConfigError) -> str:
    """Return ``value`` trimmed, or raise ``error`` naming ``field``, the bound and the value.

    Raises
    ------
    ActsError
        (of class ``error``) when the value is not a string, is empty or longer than ``max_chars``
        after trimming, or holds a control character.
    """
    if not isinstance(value, str):
        raise error(f"'{field}' must be text, was {type(value).__name__} {value!r}")
    text = value.strip()
    if not 1 <= len(text) <= max_chars:
        shown = _shown(value)
        raise error(f"'{field}' must be 1 to {max_chars} characters (after trimming), was {len(text)}: '{shown}'")
    for position, ch in enumerate(text):
        if is_refused(ch):
            raise error(
                f"'{field}' must not contain control characters, found U+{ord(ch):04X} at position {position}: "
                f"'{_shown(text)}'"
            )
    return text


def attribution(author: object, reason: object, error: type[ActsError] = ConfigError) -> tuple[str, str]:
    """Return the checked ``(author, reason)`` of an attributable action: both required, one rule for all.

    No default is ever filled in (no login name): an action nobody signed is refused.
    """
    return checked_text("author", author, AUTHOR_MAX_CHARS, error), checked_text("reason", reason, REASON_MAX_CHARS, error)
