"""The run-folder readers (``backend.audit.artifacts``) refuse what they cannot read, naming the file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from backend.audit.artifacts import decimal_value, read_json, read_parquet
from backend.errors import ArtifactError


def test_read_json_refuses_a_file_it_cannot_read(tmp_path: Path) -> None:
    folder = tmp_path / "summary.json"
    folder.mkdir()  # a folder where the file should be: reading it fails with an OSError

    with pytest.raises(ArtifactError, match=r"summary.json cannot be read: Is a directory"):
        read_json(folder)


def test_read_json_accepts_a_key_of_one_of_several_types(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('{"x": 1.5, "y": "s"}', encoding="utf-8")

    assert read_json(path, {"x": (int, float)}) == {"x": 1.5, "y": "s"}
    with pytest.raises(ArtifactError, match=r"a.json: 'y' must be an integer or a number, was 's'"):
        read_json(path, {"y": (int, float)})


def test_read_parquet_names_the_missing_columns_and_an_unreadable_path(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(path)

    assert read_parquet(path, ("a",)).columns == ["a"]
    with pytest.raises(ArtifactError, match=r"f.parquet lacks the columns \['b'\] \(has \['a'\]\)"):
        read_parquet(path, ("a", "b"))
    folder = tmp_path / "d.parquet"
    folder.mkdir()
    with pytest.raises(ArtifactError, match=r"d.parquet cannot be read: "):
        read_parquet(folder)


def test_decimal_value_names_file_key_and_text(tmp_path: Path) -> None:
    assert decimal_value(tmp_path / "s.json", "fees_paid", "1.25") == Decimal("1.25")
    with pytest.raises(ArtifactError, match=r"s.json: 'fees_paid' must be a decimal number, was 'lots'"):
        decimal_value(tmp_path / "s.json", "fees_paid", "lots")
