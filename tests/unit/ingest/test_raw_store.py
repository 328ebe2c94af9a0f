"""The raw store keeps every body byte for byte, content-addressed, and records revisions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from backend.data.raw import RawEntry, RawStore, canonical_params
from backend.errors import DataError


@pytest.fixture
def store(tmp_path: Path) -> RawStore:
    raw = RawStore(tmp_path / "raw")
    yield raw
    raw.close()


def test_a_body_is_kept_byte_for_byte_under_its_sha256(store: RawStore) -> None:
    body = b'[{"price_open": 1.0}]\n\x00\xff'

    record = store.put("coinapi", "/v1/ohlcv/X/history", {"limit": 10, "period_id": "5MIN"}, body, 1_000, 200)

    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert record.size == len(body)
    assert store.object_path(record.sha256).read_bytes() == body
    assert store.read(record) == body
    assert record.params == '{"limit":10,"period_id":"5MIN"}'
    assert (record.provider, record.endpoint, record.received_at_ms, record.status, record.revision_of) == (
        "coinapi", "/v1/ohlcv/X/history", 1_000, 200, None,
    )  # fmt: skip


def test_the_same_body_for_the_same_request_adds_no_row(store: RawStore) -> None:
    first = store.put("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"a", 1, 200)
    again = store.put("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"a", 2, 200)

    assert again == first
    assert len(store.records()) == 1


def test_a_different_body_for_the_same_request_is_a_revision_and_both_are_kept(store: RawStore) -> None:
    first = store.put("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"old", 1, 200)
    second = store.put("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"new", 2, 200)
    other_request = store.put("kraken_public", "/0/public/OHLC", {"pair": "ETHUSD"}, b"new", 3, 200)

    assert second.revision_of == first.id
    assert other_request.revision_of is None
    assert store.read(first) == b"old" and store.read(second) == b"new"
    assert [r.id for r in store.records()] == [first.id, second.id, other_request.id]


def test_an_error_status_body_is_kept_but_is_not_a_revision_of_the_good_body(store: RawStore) -> None:
    good = store.put("coinapi", "/v1/x", {}, b"[]", 1, 200)
    refused = store.put("coinapi", "/v1/x", {}, b'{"message":"Too many requests"}', 2, 429)

    assert refused.revision_of is None
    assert refused.status == 429 and good.status == 200


@pytest.mark.parametrize("name", ["apikey", "X-CoinAPI-Key", "api_secret", "token", "API-Sign", "nonce"])
def test_a_parameter_that_looks_like_a_credential_is_refused(store: RawStore, name: str) -> None:
    with pytest.raises(DataError, match=f"parameter '{name}' looks like a credential"):
        store.put("coinapi", "/v1/x", {name: "canary-XYZ"}, b"[]", 1, 200)

    assert store.records() == []


def test_canonical_params_sort_keys_and_stringify_values() -> None:
    assert canonical_params({"b": 2, "a": "x"}) == '{"a":"x","b":2}'


def test_an_existing_object_is_never_rewritten(store: RawStore) -> None:
    record = store.put("coinapi", "/v1/x", {}, b"body", 1, 200)
    path = store.object_path(record.sha256)
    before = path.stat().st_mtime_ns

    store.put("coinapi", "/v1/y", {}, b"body", 2, 200)

    assert path.stat().st_mtime_ns == before
    assert [p.name for p in path.parent.iterdir()] == [record.sha256]


def test_reading_a_corrupt_or_missing_object_raises(store: RawStore) -> None:
    record = store.put("coinapi", "/v1/x", {}, b"body", 1, 200)
    path = store.object_path(record.sha256)
    path.write_bytes(b"tampered")
    with pytest.raises(DataError, match="is corrupt"):
        store.read(record)
    path.unlink()
    with pytest.raises(DataError, match="is missing"):
        store.read(record)


def test_an_unknown_record_id_raises(store: RawStore) -> None:
    with pytest.raises(DataError, match="no raw record with id 42"):
        store.get(42)


def test_the_manifest_survives_a_reopen(tmp_path: Path) -> None:
    first = RawStore(tmp_path / "raw")
    record = first.put("coinapi", "/v1/x", {}, b"body", 1, 200)
    first.close()

    second = RawStore(tmp_path / "raw")
    assert second.get(record.id) == record
    second.close()


def test_a_poll_is_kept_in_one_transaction_in_order_with_the_single_put_rules(store: RawStore, tmp_path: Path) -> None:
    filed = store.put("kraken_public", "/0/public/OHLC", {"pair": "ETHUSD"}, b"eth", 1, 200)
    entries = [
        RawEntry("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"btc", 5, 200),
        RawEntry("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"<html>502", 5, 502),
        RawEntry("kraken_public", "/0/public/OHLC", {"pair": "ETHUSD"}, b"eth", 5, 200),  # already kept: no new row
        RawEntry("kraken_public", "/0/public/OHLC", {"pair": "SOLUSD"}, b"eth", 5, 200),  # a body kept as a file
    ]

    records = store.put_many(entries)

    assert [r.status for r in records] == [200, 502, 200, 200] and records[2] == filed
    assert [store.read(r) for r in records] == [b"btc", b"<html>502", b"eth", b"eth"]
    assert not store.object_path(records[0].sha256).exists()  # in the manifest's synced transaction, not a file
    assert [r.id for r in store.records()] == [filed.id, records[0].id, records[1].id, records[3].id]
    reopened = RawStore(tmp_path / "raw")
    assert reopened.read(records[0]) == b"btc" and reopened.records() == store.records()
    reopened.close()
    revised = store.put_many([RawEntry("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"btc2", 6, 200)])
    assert revised[0].revision_of == records[0].id


def test_a_poll_with_a_credential_looking_parameter_keeps_nothing(store: RawStore) -> None:
    good = RawEntry("kraken_public", "/0/public/OHLC", {"pair": "XBTUSD"}, b"btc", 5, 200)
    with pytest.raises(DataError, match="parameter 'nonce' looks like a credential"):
        store.put_many([good, RawEntry("kraken_public", "/0/private/Balance", {"nonce": "1"}, b"{}", 5, 200)])

    assert store.records() == []
    assert store.put_many([]) == []
