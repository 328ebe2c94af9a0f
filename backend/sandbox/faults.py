"""Fault injection for the API emulators: deterministic counters, a token bucket, data faults.

Every fault is decided by the request number (1-based, counting every request the emulator
received) or by the injected clock, never by chance, so a test that sends the same requests sees
the same faults.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from backend.config.errors_format import format_validation_error
from backend.errors import ConfigError

Every = Annotated[int, Field(ge=1, le=1_000_000)]


class PrivateFault(BaseModel):
    """A scripted answer to chosen calls of one Kraken private endpoint (the n-th ``AddOrder``...).

    Exactly one of ``error`` (a Kraken error string, e.g. ``EOrder:Insufficient funds``), ``status``
    (an HTTP 5xx with the CDN's HTML body) or ``timeout`` (the answer is held back ``timeout_seconds``
    of the FaultSpec). With ``after_accept`` the call is carried out first (an order is placed), then
    the fault is answered: the client cannot know whether it happened and must reconcile.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: Annotated[str, Field(pattern=r"^[A-Za-z]{2,40}$")]
    calls: Annotated[tuple[Every, ...], Field(min_length=1, max_length=10_000)]
    error: Annotated[str, Field(pattern=r"^[EW][A-Za-z]+:[ -~]{1,200}$")] | None = None
    status: Annotated[int, Field(ge=500, le=599)] | None = None
    timeout: bool = False
    after_accept: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> PrivateFault:
        kinds = [self.error is not None, self.status is not None, self.timeout]
        if sum(kinds) != 1:
            raise ValueError(f"private fault of {self.endpoint}: give exactly one of error, status, timeout (gave {sum(kinds)})")
        return self


class FaultSpec(BaseModel):
    """What an emulator does wrong, and when; the default does nothing wrong.

    ``*_every`` faults hit requests whose number is a multiple of the value. Bar keys are bar open
    times in UTC ms at the emulator's base timeframe and apply to every symbol.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rate_limit_per_second: Annotated[float, Field(gt=0.0, le=1e6)] | None = None
    fail_429_every: Every | None = None
    fail_5xx_every: Every | None = None
    timeout_every: Every | None = None
    timeout_seconds: Annotated[float, Field(gt=0.0, le=600.0)] = 2.0
    truncate_every: Every | None = None
    malformed_every: Every | None = None
    hidden_bars: tuple[int, ...] = ()
    late_bars: dict[int, Annotated[int, Field(ge=1)]] = {}
    revised_bars: dict[int, Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = {}
    duplicated_bars: tuple[int, ...] = ()  # served twice in a row: a duplicated timestamp in one page
    disordered_bars: tuple[int, ...] = ()  # served after the next row: timestamps out of order in one page
    private_faults: tuple[PrivateFault, ...] = ()  # Kraken private endpoints, by call number of each endpoint


def load_fault_spec(path: Path) -> FaultSpec:
    """Read a FaultSpec from a YAML file.

    Raises
    ------
    ConfigError
        When the file cannot be read or parsed, or a value breaks a bound (naming the key).
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read fault file {path}: {error}") from error
    try:
        return FaultSpec.model_validate(raw or {})
    except ValidationError as error:
        raise ConfigError(f"invalid fault file {path}:\n" + format_validation_error(error)) from error


class FaultKind(enum.Enum):
    """A transport fault chosen for one request."""

    RATE_LIMITED = "rate_limited"  # the token bucket is empty
    FAIL_429 = "fail_429"
    FAIL_5XX = "fail_5xx"
    TIMEOUT = "timeout"
    TRUNCATE = "truncate"
    MALFORMED = "malformed"


SERVER_ERROR_CYCLE = (500, 502, 503)


@dataclass(frozen=True)
class Admission:
    """The fate of one request: its number, the fault (if any) and, when rate limited, the wait."""

    number: int
    fault: FaultKind | None = None
    status: int = 200
    retry_after_seconds: float = 0.0


class FaultInjector:
    """Apply a FaultSpec: count requests, keep the token bucket and remember which bars were served.

    Parameters
    ----------
    spec : FaultSpec
        The faults to inject.
    clock_seconds : Callable[[], float]
        Time source of the token bucket, in seconds.
    """

    def __init__(self, spec: FaultSpec, clock_seconds: Callable[[], float]) -> None:
        self.spec = spec
        self._clock = clock_seconds
        self._lock = threading.Lock()
        self._count = 0
        rate = spec.rate_limit_per_second
        self._capacity = max(1.0, rate) if rate is not None else 0.0
        self._tokens = self._capacity
        self._refilled_at = clock_seconds()
        self._served: set[tuple[str, int]] = set()
        self._late = np.array(sorted(spec.late_bars), dtype=np.int64)
        self._late_from = np.array([spec.late_bars[k] for k in sorted(spec.late_bars)], dtype=np.int64)
        self._hidden = np.array(sorted(set(spec.hidden_bars)), dtype=np.int64)
        self._duplicated = np.array(sorted(set(spec.duplicated_bars)), dtype=np.int64)
        self._disordered = np.array(sorted(set(spec.disordered_bars)), dtype=np.int64)

    @property
    def request_count(self) -> int:
        """Return how many requests were admitted or refused so far."""
        return self._count

    def _take_token(self) -> float:
        """Return 0 when a token was taken, else the seconds until one is available."""
        rate = self.spec.rate_limit_per_second
        if rate is None:
            return 0.0
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    def admit(self) -> Admission:
        """Count one request and decide its transport fault (the first that applies, in declared order)."""
        spec = self.spec
        with self._lock:
            self._count += 1
            number = self._count
            wait = self._take_token()
        if wait > 0.0:
            return Admission(number, FaultKind.RATE_LIMITED, 429, wait)
        if _hits(number, spec.fail_429_every):
            return Admission(number, FaultKind.FAIL_429, 429, 1.0)
        every_5xx = spec.fail_5xx_every
        if every_5xx is not None and number % every_5xx == 0:
            cycle = SERVER_ERROR_CYCLE[(number // every_5xx - 1) % len(SERVER_ERROR_CYCLE)]
            return Admission(number, FaultKind.FAIL_5XX, cycle)
        for kind, every in (
            (FaultKind.TIMEOUT, spec.timeout_every),
            (FaultKind.TRUNCATE, spec.truncate_every),
            (FaultKind.MALFORMED, spec.malformed_every),
        ):
            if _hits(number, every):
                return Admission(number, kind)
        return Admission(number)

    @property
    def has_bar_faults(self) -> bool:
        """Return True when any data fault (hidden, late, revised) is configured."""
        return bool(self.spec.hidden_bars or self.spec.late_bars or self.spec.revised_bars)

    def visible_mask(self, ts: np.ndarray, request_number: int) -> np.ndarray:
        """Return which bars (open times in ms) may be served to request ``request_number``."""
        keep = ~np.isin(ts, self._hidden)
        if self._late.size:
            pos = np.searchsorted(self._late, ts)
            pos_clipped = np.minimum(pos, self._late.size - 1)
            is_late = self._late[pos_clipped] == ts
            keep &= ~(is_late & (self._late_from[pos_clipped] > request_number))
        return keep

    def revise(
        self, symbol: str, ts: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (high, low, close) with revised closes for bars of ``symbol`` served before."""
        revised = self.spec.revised_bars
        if not revised:
            return high, low, close
        high, low, close = high.copy(), low.copy(), close.copy()
        with self._lock:
            for index in np.flatnonzero(np.isin(ts, np.fromiter(revised, dtype=np.int64))):
                key = int(ts[index])
                if (symbol, key) in self._served:
                    close[index] = revised[key]
                    high[index] = max(high[index], close[index])
                    low[index] = min(low[index], close[index])
        return high, low, close

    def page_order(self, ts: np.ndarray) -> np.ndarray:
        """Return the row order of a page: duplicated bars twice, a disordered bar after its successor."""
        order = list(range(ts.size))
        for index in np.flatnonzero(np.isin(ts, self._disordered)).tolist():
            position = order.index(index)
            if position + 1 < len(order):
                order[position], order[position + 1] = order[position + 1], order[position]
        doubled = set(np.flatnonzero(np.isin(ts, self._duplicated)).tolist())
        return np.array([i for index in order for i in ((index, index) if index in doubled else (index,))], dtype=np.int64)

    def mark_served(self, symbol: str, ts: np.ndarray) -> None:
        """Remember that bars of ``symbol`` at ``ts`` were served (only revised bars need it)."""
        revised = self.spec.revised_bars
        with self._lock:
            for key in ts[np.isin(ts, np.fromiter(revised, dtype=np.int64))].tolist():
                self._served.add((symbol, key))


def _hits(number: int, every: int | None) -> bool:
    return every is not None and number % every == 0


def retry_after_header(seconds: float) -> str:
    """Return a Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
