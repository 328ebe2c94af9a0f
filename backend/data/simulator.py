"""Seeded OHLCV simulator with factor structure, regimes and volatility clustering.

Log returns are ``drift(regime) * dt + sigma_symbol * sqrt(dt) * vol(regime) * sqrt(h) * z`` where

* ``z`` mixes a market factor, a factor per cluster and fat-tailed idiosyncratic noise, so returns are
  cross-correlated, more strongly inside a cluster;
* the regime (calm / trend up / trend down / turbulent) is a Markov chain shared by all symbols;
* ``h`` is a GARCH(1,1) variance (unconditional mean 1) per symbol, giving volatility clustering.

Everything is drawn from ``numpy.random.default_rng(seed)`` and its spawned children, so the same
arguments give a byte-identical frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from backend.data.lake import OHLCV_SCHEMA, TIMEFRAME_MS
from backend.errors import DataError

_DAY_MS = 86_400_000
_YEAR_MS = 365 * _DAY_MS  # crypto trades every day of the year

# Approximate spot prices (USD) and annualised volatilities; other symbols get values derived from their name.
_BASE_PRICE = {
    "BTC": 60000.0, "ETH": 3000.0, "XRP": 0.6, "BNB": 600.0, "SOL": 150.0, "TRX": 0.25, "DOGE": 0.15,
    "ADA": 0.5, "HYPE": 30.0, "LINK": 15.0, "BCH": 400.0, "XLM": 0.3, "ZEC": 50.0, "LTC": 80.0,
    "AVAX": 30.0, "SUI": 3.0, "HBAR": 0.2, "SHIB": 0.00002, "TON": 5.0, "DOT": 6.0, "UNI": 8.0,
    "CRO": 0.1, "MNT": 0.8, "TAO": 400.0, "AAVE": 200.0, "NEAR": 4.0, "WLFI": 0.2, "ENA": 0.5,
    "PEPE": 0.00001, "APT": 8.0,
}  # fmt: skip
_ANNUAL_VOL = {"BTC": 0.5, "ETH": 0.65, "BNB": 0.55, "SOL": 0.8, "XRP": 0.75}

# name, annualised log drift, volatility multiplier, mean duration in days
_REGIMES = (
    ("calm", 0.0, 0.7, 30.0),
    ("trend_up", 0.9, 1.0, 20.0),
    ("trend_down", -0.9, 1.2, 15.0),
    ("turbulent", -0.2, 2.0, 5.0),
)
# Probability of the next regime when one ends (rows: current regime); durations are drawn separately.
_REGIME_NEXT = np.array(
    [
        [0.0, 0.4, 0.35, 0.25],
        [0.6, 0.0, 0.15, 0.25],
        [0.6, 0.15, 0.0, 0.25],
        [0.5, 0.25, 0.25, 0.0],
    ]
)

# Variance shares of the shock: within-cluster correlation ~0.6, across clusters ~0.35.
_W_MARKET, _W_CLUSTER, _W_IDIO = np.sqrt(0.35), np.sqrt(0.25), np.sqrt(0.40)
_T_DF = 5  # Student-t idiosyncratic noise: fatter tails than normal
_VOL_HALF_LIFE_MS = 7 * _DAY_MS  # how long a volatility shock takes to halve, whatever the bar length


def _unit(symbol: str, purpose: str) -> float:
    """Return a stable number in [0, 1) from the symbol name (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{purpose}:{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _base_price(symbol: str) -> float:
    return _BASE_PRICE.get(symbol, 10 ** (-2 + 4 * _unit(symbol, "price")))


def _annual_vol(symbol: str) -> float:
    return _ANNUAL_VOL.get(symbol, 0.7 + 0.5 * _unit(symbol, "vol"))


def _regime_path(rng: np.random.Generator, n_bars: int, bar_ms: int) -> np.ndarray:
    """Draw regime indices per bar: geometric sojourns, then a jump to another regime."""
    states: list[int] = []
    lengths: list[int] = []
    state = int(rng.integers(len(_REGIMES)))
    total = 0
    while total < n_bars:
        mean_bars = max(_REGIMES[state][3] * _DAY_MS / bar_ms, 1.0)
        length = int(rng.geometric(1.0 / mean_bars))
        states.append(state)
        lengths.append(length)
        total += length
        state = int(rng.choice(len(_REGIMES), p=_REGIME_NEXT[state]))
    return np.repeat(np.array(states), lengths)[:n_bars]


def _garch_variance(shocks: np.ndarray, bar_ms: int) -> np.ndarray:
    """Return GARCH(1,1) variances with unconditional mean 1 for standardised ``shocks`` (bars x symbols)."""
    persistence = 0.5 ** (bar_ms / _VOL_HALF_LIFE_MS)
    # alpha shrinks with sqrt(1 - persistence) so short bars keep a finite fourth moment.
    alpha = 0.3 * np.sqrt(1.0 - persistence)
    beta = persistence - alpha
    omega = 1.0 - persistence
    growth = alpha * shocks**2 + beta
    variance = np.empty_like(shocks)
    variance[0] = 1.0
    # h[t] = omega + h[t-1] * (alpha z[t-1]^2 + beta): a recursion in t, vectorised over symbols.
    for t in range(1, shocks.shape[0]):
        np.multiply(variance[t - 1], growth[t - 1], out=variance[t])
        variance[t] += omega
    return variance


def simulate_ohlcv(
    symbols: Sequence[str],
    clusters: Mapping[str, str],
    timeframe: str,
    start_ms: int,
    n_bars: int,
    seed: int,
    batch_id: str = "simulated",
    signal_bps: float = 0.0,
) -> pl.DataFrame:
    """Simulate bars for several symbols.

    Parameters
    ----------
    symbols : Sequence[str]
        Distinct symbols to simulate.
    clusters : Mapping[str, str]
        Cluster name of every symbol; symbols of one cluster share a factor.
    timeframe : str
        Bar length, a key of :data:`TIMEFRAME_MS`.
    start_ms : int
        Open time of the first bar, UTC ms, aligned to the timeframe.
    n_bars : int
        Bars per symbol, at least 2.
    seed : int
        Seed of ``numpy.random.default_rng``.
    batch_id : str
        Value of the ``batch_id`` column.
    signal_bps : float
        A planted signal: each symbol's log return gains a drift of ``+-signal_bps`` bps a bar whose sign is
        redrawn every day (from its own random stream, so 0 leaves every other draw unchanged). A model can
        learn it from past returns; it is a known edge for tests and demos of the strategy's economics.

    Returns
    -------
    pl.DataFrame
        Canonical lake columns (source ``"simulated"``), sorted by (ts, symbol).

    Raises
    ------
    DataError
        On fewer than 2 bars, no or duplicate symbols, an unknown timeframe, a misaligned start or a
        symbol without a cluster.
    """
    if n_bars < 2:
        raise DataError(f"n_bars must be >= 2, got {n_bars}")
    if not symbols:
        raise DataError("simulate_ohlcv needs at least one symbol")
    if len(set(symbols)) != len(symbols):
        raise DataError(f"symbols must be distinct, got {list(symbols)}")
    if timeframe not in TIMEFRAME_MS:
        raise DataError(f"unknown timeframe {timeframe!r}; expected one of {sorted(TIMEFRAME_MS)}")
    bar_ms = TIMEFRAME_MS[timeframe]
    if start_ms % bar_ms:
        raise DataError(f"start_ms={start_ms} is not aligned to the {timeframe} timeframe ({bar_ms} ms)")
    for symbol in symbols:
        if symbol not in clusters:
            raise DataError(f"symbol {symbol!r} has no cluster")

    names = sorted(symbols)  # output order is (ts, symbol)
    n_symbols = len(names)
    cluster_names = sorted({clusters[s] for s in names})
    cluster_of = np.array([cluster_names.index(clusters[s]) for s in names])
    regime_rng, factor_rng, idio_rng, range_rng, volume_rng = np.random.default_rng(seed).spawn(5)

    regime = _regime_path(regime_rng, n_bars, bar_ms)
    drift = np.array([r[1] for r in _REGIMES])[regime][:, None]
    regime_vol = np.array([r[2] for r in _REGIMES])[regime][:, None]

    market = factor_rng.standard_normal((n_bars, 1))
    cluster = factor_rng.standard_normal((n_bars, len(cluster_names)))[:, cluster_of]
    idio = idio_rng.standard_t(_T_DF, (n_bars, n_symbols)) / np.sqrt(_T_DF / (_T_DF - 2))
    shocks = _W_MARKET * market + _W_CLUSTER * cluster + _W_IDIO * idio

    dt = bar_ms / _YEAR_MS
    sigma = np.array([_annual_vol(s) for s in names]) * np.sqrt(dt)
    bar_sd = sigma * regime_vol * np.sqrt(_garch_variance(shocks, bar_ms))
    log_ret = drift * dt + bar_sd * shocks
    if signal_bps > 0.0:
        (signal_rng,) = np.random.default_rng(seed).spawn(6)[5:]
        per_day = max(_DAY_MS // bar_ms, 1)
        signs = signal_rng.choice([-1.0, 1.0], size=(n_bars // per_day + 1, n_symbols))
        log_ret = log_ret + np.repeat(signs, per_day, axis=0)[:n_bars] * signal_bps / 10_000.0

    base = np.array([_base_price(s) for s in names])
    close = base * np.exp(np.cumsum(log_ret, axis=0))
    # open is exactly the previous close, and the very first open is the base price.
    open_ = np.vstack([base[None, :], close[:-1]])
    # Multiplying by exp(x >= 0) can only round up, so high >= max(open, close) and low <= min hold exactly.
    high = np.maximum(open_, close) * np.exp(0.6 * bar_sd * np.abs(range_rng.standard_normal(shocks.shape)))
    low = np.minimum(open_, close) * np.exp(-0.6 * bar_sd * np.abs(range_rng.standard_normal(shocks.shape)))

    # Typical traded notional per hour in USD (1e6..1e8 by symbol), in base units, busier on big moves.
    hourly_notional = np.array([10 ** (6 + 2 * _unit(s, "volume")) for s in names])
    noise = volume_rng.standard_normal(shocks.shape)
    volume = hourly_notional * (bar_ms / 3_600_000) / close * np.exp(0.6 * np.abs(shocks) + 0.4 * noise - 0.6)

    ts = start_ms + bar_ms * np.arange(n_bars, dtype=np.int64)
    symbol_index = np.tile(np.arange(n_symbols), n_bars)
    frame = pl.DataFrame(
        {
            "ts": np.repeat(ts, n_symbols),
            "symbol": pl.Series(names, dtype=pl.String).gather(symbol_index),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
        }
    )
    return frame.with_columns(
        source=pl.lit("simulated", dtype=pl.String), batch_id=pl.lit(batch_id, dtype=pl.String)
    ).select(list(OHLCV_SCHEMA))
