"""Validation errors become one sentence per problem naming the key, the bound and the value."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.config.errors_format import describe_error, format_validation_error
from backend.config.schema import RunSpec


class Bounds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    above: Annotated[float, Field(gt=0.0)] = 1.0
    at_least: Annotated[int, Field(ge=2)] = 2
    below: Annotated[float, Field(lt=1.0)] = 0.5
    at_most: Annotated[int, Field(le=30)] = 30
    quote: Literal["USD"] = "USD"
    tags: Annotated[tuple[str, ...], Field(min_length=1, max_length=2)] = ("a",)


def errors_of(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Bounds(**values)
    return caught.value


@pytest.mark.parametrize(
    ("values", "sentence"),
    [
        ({"above": 0}, "'above' must be > 0.0, was 0"),
        ({"at_least": 1}, "'at_least' must be >= 2, was 1"),
        ({"below": 1.0}, "'below' must be < 1.0, was 1.0"),
        ({"at_most": 31}, "'at_most' must be <= 30, was 31"),
        ({"extra": "x"}, "'extra' is not a known key (unknown keys are refused), was 'x'"),
        ({"tags": ()}, "'tags' tuple should have at least 1 item after validation, not 0, was ()"),
        ({"tags": ("a", "b", "c")}, "'tags' tuple should have at most 2 items after validation, not 3, was ('a', 'b', 'c')"),
        # the literal keeps its case
        ({"quote": "usd"}, "'quote' input should be 'USD', was 'usd'"),
    ],
)
def test_each_error_kind_reads_as_one_sentence(values: dict[str, object], sentence: str) -> None:
    assert format_validation_error(errors_of(**values)) == sentence


def test_prefix_is_put_before_every_key() -> None:
    assert format_validation_error(errors_of(at_most=31, below=2.0), prefix="risk.") == (
        "'risk.at_most' must be <= 30, was 31\n'risk.below' must be < 1.0, was 2.0"
    )


def test_missing_key_and_root_level_rule() -> None:
    assert describe_error({"type": "missing", "loc": ("risk", "name"), "msg": "Field required"}) == (
        "'risk.name' is required and missing"
    )
    assert describe_error({"type": "value_error", "loc": (), "msg": "Value error, symbols clash", "ctx": {}}) == (
        "'<root>': symbols clash"
    )


def test_data_kind_tag_is_dropped_but_list_indices_are_kept() -> None:
    with pytest.raises(ValidationError) as caught:
        RunSpec.model_validate({"data": {"kind": "shared", "timeframe": "1h", "start": "2021-01-01", "days": 1, "symbols": ["btc"]}})
    sentences = format_validation_error(caught.value).splitlines()
    assert "'data.days' must be >= 2, was 1" in sentences
    assert "'data.symbols.0' string should match pattern '^[A-Z0-9]+$', was 'btc'" in sentences
    assert "'universe' is required and missing" in sentences
