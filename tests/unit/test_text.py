"""The one free-text rule (``backend.config.text``): what is refused, what the refusal says, how stored text renders."""

from __future__ import annotations

import pytest

from backend.errors import ConfigError, ControlError
from backend.config.text import AUTHOR_MAX_CHARS, REASON_MAX_CHARS, SHOWN_CHARS, attribution, checked_text, display_text


@pytest.mark.parametrize(
    ("value", "code", "position"),
    [
        ("line one\nv9  forged entry", 0x0A, 8),
        ("tab\there", 0x09, 3),
        ("carriage\rreturn", 0x0D, 8),
        ("escape \x1b[2J", 0x1B, 7),
        ("nul\x00", 0x00, 3),
        ("del\x7f", 0x7F, 3),
        ("c1 \x85 next line", 0x85, 3),
        ("line\u2028separator", 0x2028, 4),
        ("para\u2029separator", 0x2029, 4),
        ("bidi \u202eevil", 0x202E, 5),
        ("zero\u200bwidth", 0x200B, 4),
    ],
)
def test_control_and_invisible_characters_are_refused_naming_field_character_and_position(
    value: str, code: int, position: int
) -> None:
    with pytest.raises(ControlError) as refused:
        checked_text("reason", value, REASON_MAX_CHARS, ControlError)

    message = str(refused.value)
    assert message.startswith(f"'reason' must not contain control characters, found U+{code:04X} at position {position}: '")
    assert "\n" not in message and "\r" not in message and "\x1b" not in message


def test_text_is_trimmed_and_unicode_letters_and_emoji_are_accepted() -> None:
    assert checked_text("author", "  Zoë Ødegård 🚀 ", AUTHOR_MAX_CHARS) == "Zoë Ødegård 🚀"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "'author' must be 1 to 64 characters (after trimming), was 0: ''"),
        ("   ", "'author' must be 1 to 64 characters (after trimming), was 0: '   '"),
        ("a" * 65, f"'author' must be 1 to 64 characters (after trimming), was 65: '{'a' * 65}'"),
        (None, "'author' must be text, was NoneType None"),
        (7, "'author' must be text, was int 7"),
    ],
)
def test_empty_oversized_or_non_text_values_are_refused(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match="^") as refused:
        checked_text("author", value, AUTHOR_MAX_CHARS)
    assert str(refused.value) == message


def test_a_huge_value_is_quoted_cut_short() -> None:
    with pytest.raises(ConfigError) as refused:
        checked_text("reason", "x" * 1_000_000, REASON_MAX_CHARS)

    message = str(refused.value)
    assert message.startswith("'reason' must be 1 to 500 characters (after trimming), was 1000000: 'xxx")
    assert message.endswith("...'") and len(message) < SHOWN_CHARS + 100


def test_attribution_checks_both_and_fills_in_no_default() -> None:
    assert attribution(" alice ", " why ") == ("alice", "why")
    with pytest.raises(ConfigError, match="'author' must be 1 to 64"):
        attribution("", "why")
    with pytest.raises(ConfigError, match="'reason' must not contain control characters"):
        attribution("alice", "a\nb")


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("plain text, ünïcode 🚀", "plain text, ünïcode 🚀"),
        ("two\nlines", "two\\nlines"),
        ("cr\rtab\t", "cr\\rtab\\t"),
        ("esc\x1b", "esc\\x1b"),
        ("sep\u2028", "sep\\u2028"),
        ("tag\U000e0001", "tag\\U000e0001"),
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_display_text_puts_any_stored_text_on_one_unambiguous_line(stored: str, shown: str) -> None:
    assert display_text(stored) == shown
    assert "\n" not in display_text(stored)
