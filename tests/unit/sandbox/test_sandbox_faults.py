"""FaultSpec validation, the YAML loader and the deterministic fault injector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.errors import ConfigError
from backend.sandbox.faults import FaultInjector, FaultKind, FaultSpec, load_fault_spec, retry_after_header


class Seconds:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_default_spec_injects_nothing() -> None:
    injector = FaultInjector(FaultSpec(), Seconds())
    admissions = [injector.admit() for _ in range(50)]
    assert [a.number for a in admissions] == list(range(1, 51))
    assert {a.fault for a in admissions} == {None}
    assert injector.request_count == 50
    assert not injector.has_bar_faults


def test_every_nth_faults_hit_exact_request_numbers_in_declared_priority() -> None:
    spec = FaultSpec(fail_429_every=6, fail_5xx_every=4, timeout_every=5, truncate_every=7, malformed_every=9)
    injector = FaultInjector(spec, Seconds())
    faults = {a.number: (a.fault, a.status) for a in (injector.admit() for _ in range(36))}
    assert faults[6] == (FaultKind.FAIL_429, 429)
    assert faults[12] == (FaultKind.FAIL_429, 429)  # 429 wins over 5xx (12 is also a multiple of 4)
    assert faults[4] == (FaultKind.FAIL_5XX, 500)
    assert faults[8] == (FaultKind.FAIL_5XX, 502)
    assert faults[16] == (FaultKind.FAIL_5XX, 500)  # the cycle goes on by multiple: 12 was the 503 slot
    assert faults[20] == (FaultKind.FAIL_5XX, 502)
    assert faults[5] == (FaultKind.TIMEOUT, 200)
    assert faults[7] == (FaultKind.TRUNCATE, 200)
    assert faults[9] == (FaultKind.MALFORMED, 200)
    assert faults[1] == (None, 200)


def test_token_bucket_refuses_when_empty_and_refills_with_the_clock() -> None:
    clock = Seconds()
    injector = FaultInjector(FaultSpec(rate_limit_per_second=2.0), clock)
    first = [injector.admit() for _ in range(3)]
    assert [a.fault for a in first] == [None, None, FaultKind.RATE_LIMITED]
    assert first[2].status == 429
    assert first[2].retry_after_seconds == pytest.approx(0.5)
    clock.now += 0.5
    assert injector.admit().fault is None
    assert injector.admit().fault is FaultKind.RATE_LIMITED
    clock.now += 60.0  # a long pause refills the bucket only up to its capacity
    assert [injector.admit().fault for _ in range(3)] == [None, None, FaultKind.RATE_LIMITED]


def test_slow_bucket_keeps_a_capacity_of_one_request() -> None:
    clock = Seconds()
    injector = FaultInjector(FaultSpec(rate_limit_per_second=0.25), clock)
    assert injector.admit().fault is None
    refused = injector.admit()
    assert refused.fault is FaultKind.RATE_LIMITED
    assert refused.retry_after_seconds == pytest.approx(4.0)
    assert retry_after_header(refused.retry_after_seconds) == "4"
    assert retry_after_header(0.01) == "1"


def test_hidden_and_late_bars_are_masked_until_their_request() -> None:
    spec = FaultSpec(hidden_bars=(300_000,), late_bars={600_000: 3, 1_200_000: 2})
    injector = FaultInjector(spec, Seconds())
    ts = np.array([0, 300_000, 600_000, 900_000, 1_200_000, 1_500_000], dtype=np.int64)
    assert injector.has_bar_faults
    assert injector.visible_mask(ts, 1).tolist() == [True, False, False, True, False, True]
    assert injector.visible_mask(ts, 2).tolist() == [True, False, False, True, True, True]
    assert injector.visible_mask(ts, 3).tolist() == [True, False, True, True, True, True]


def test_revised_close_is_served_only_after_the_bar_was_served_once() -> None:
    injector = FaultInjector(FaultSpec(revised_bars={600_000: 50.0}), Seconds())
    ts = np.array([300_000, 600_000], dtype=np.int64)
    high, low, close = np.array([12.0, 13.0]), np.array([9.0, 10.0]), np.array([11.0, 12.0])
    assert injector.revise("BTC", ts, high, low, close)[2].tolist() == [11.0, 12.0]
    injector.mark_served("BTC", ts)
    new_high, new_low, new_close = injector.revise("BTC", ts, high, low, close)
    assert new_close.tolist() == [11.0, 50.0]
    assert new_high.tolist() == [12.0, 50.0]  # the revised close stays inside [low, high]
    assert new_low.tolist() == [9.0, 10.0]
    assert injector.revise("ETH", ts, high, low, close)[2].tolist() == [11.0, 12.0]  # per symbol
    assert close.tolist() == [11.0, 12.0]  # inputs untouched


def test_revise_without_revisions_returns_inputs() -> None:
    injector = FaultInjector(FaultSpec(), Seconds())
    arrays = (np.array([1.0]), np.array([1.0]), np.array([1.0]))
    assert injector.revise("BTC", np.array([0]), *arrays) == arrays


def test_load_fault_spec_reads_yaml_with_int_keys(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("fail_5xx_every: 3\nhidden_bars: [300000]\nlate_bars: {600000: 4}\nrevised_bars: {'900000': 1.5}\n")
    spec = load_fault_spec(path)
    assert spec == FaultSpec(fail_5xx_every=3, hidden_bars=(300000,), late_bars={600000: 4}, revised_bars={900000: 1.5})


def test_empty_fault_file_means_no_faults(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("")
    assert load_fault_spec(path) == FaultSpec()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fail_429_every: 0\n", "'fail_429_every' must be >= 1, was 0"),
        ("timeout_seconds: 601\n", "'timeout_seconds' must be <= 600.0, was 601"),
        ("rate_limit_per_second: 0\n", "'rate_limit_per_second' must be > 0.0, was 0"),
        ("fail_every: 2\n", "'fail_every' is not a known key"),
        ("late_bars: {600000: 0}\n", "'late_bars.600000' must be >= 1, was 0"),
    ],
)
def test_bad_fault_values_are_refused_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="invalid fault file") as caught:
        load_fault_spec(path)
    assert expected in str(caught.value)


@pytest.mark.parametrize("content", [None, "fail_429_every: [\n"])
def test_unreadable_fault_file_is_refused(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "faults.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="cannot read fault file"):
        load_fault_spec(path)


def test_fault_spec_is_frozen() -> None:
    spec = FaultSpec()
    with pytest.raises(ValueError, match="frozen"):
        spec.fail_429_every = 3  # type: ignore[misc]


def test_page_order_duplicates_and_disorders_rows() -> None:
    spec = FaultSpec(duplicated_bars=(300, 900), disordered_bars=(0, 600, 1200))
    injector = FaultInjector(spec, Seconds())
    ts = np.array([0, 300, 600, 900, 1200], dtype=np.int64)
    # 0 moves after 300; 600 moves after 900; 1200 is last and stays; 300 and 900 are doubled.
    assert ts[injector.page_order(ts)].tolist() == [300, 300, 0, 900, 900, 600, 1200]
    assert FaultInjector(FaultSpec(), Seconds()).page_order(ts).tolist() == [0, 1, 2, 3, 4]
