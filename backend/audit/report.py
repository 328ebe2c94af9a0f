"""Self-contained HTML backtest report: summary table, equity and drawdown, one price chart per symbol.

Charts are inline SVG built here, so the file opens offline: no scripts, stylesheets, fonts or CDNs.
Long series are cut to ``max_points`` per line by min/max bucket decimation; NaN values leave gaps.
The output depends only on the inputs, so two renders of the same run are byte-identical.
"""

from __future__ import annotations

import math
import os
import tempfile
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import numpy as np

from backend.errors import ConfigError, DataError

_W, _ML, _MR, _MT, _MB = 1100, 92, 16, 10, 24  # chart width and margins, px
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN = 60_000
_DAY = 1440 * _MIN
_TIME_STEPS = tuple(m * _MIN for m in (1, 5, 15, 30, 60, 120, 240, 360, 720)) + tuple(
    d * _DAY for d in (1, 2, 7, 14)
)
_MONTH_STEPS = (1, 2, 3, 6, 12, 24, 60, 120, 240, 600, 1200)
_MARKERS = {"entry": ("#1a9641", 1), "exit": ("#d7191c", -1), "scale_out": ("#f28e2b", -1), "reentry": ("#2c7bb6", 1)}
_CSS = (
    "body{font:14px system-ui,sans-serif;margin:24px auto;max-width:1140px;color:#222;background:#fff}"
    "h1{font-size:22px;margin:0 0 12px}h2{font-size:16px;margin:22px 0 4px}"
    ".note{color:#666;font-weight:normal;font-size:13px}"
    "table{border-collapse:collapse;margin-bottom:8px}td,th{border:1px solid #ddd;padding:3px 10px;text-align:left}"
    "th{background:#f5f5f5;font-weight:600}td{font-family:ui-monospace,monospace}"
    "svg{max-width:100%;height:auto;display:block}svg text{font-size:11px;fill:#555}"
    ".grid{stroke:#eee}.frame{fill:none;stroke:#bbb}.yl{text-anchor:end}.xl{text-anchor:middle}"
    ".line{fill:none;stroke:#333;stroke-width:1;stroke-linejoin:round}polyline.equity{stroke:#1f5fa8;stroke-width:1.5}"
    "polygon.dd{fill:#d7191c;fill-opacity:.25;stroke:#d7191c;stroke-width:.8}.mk{stroke:#fff;stroke-width:.6}"
)


@dataclass(frozen=True)
class Marker:
    """One trade event drawn on its symbol's price chart at its exact time and price."""

    symbol: str
    ts_ms: int
    price: float
    kind: str
    reason: str


def _utc(ms: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Format UTC milliseconds with a strftime pattern."""
    return (_EPOCH + timedelta(milliseconds=int(ms))).strftime(fmt)


def _price(v: float) -> str:
    """Format a price with about six significant digits and no exponent: 0.0000123456, 60,123.45."""
    decimals = 2 if v == 0 else min(20, max(2, 5 - math.floor(math.log10(abs(v)))))
    return f"{v:,.{decimals}f}"


def _series(name: str, ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the series as int64/float64 arrays; raise DataError if it is empty, ragged or unordered."""
    ts, values = np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != values.shape:
        raise DataError(f"{name}: timestamps {ts.shape} and values {values.shape} must be 1-D of equal length")
    if ts.size == 0:
        raise DataError(f"{name}: series is empty")
    if np.any(np.diff(ts) <= 0):
        raise DataError(f"{name}: timestamps must be strictly increasing")
    return ts, values


def _decimate(ts: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each bucket's min and max (at most max_points finite values) plus one NaN per bucket with gaps."""
    n = values.size
    if n <= max_points:
        return ts, values
    width = -(-n // (max_points // 2))
    rows = -(-n // width)
    grid = np.full(rows * width, np.nan)
    grid[:n] = values
    grid = grid.reshape(rows, width)
    ok = np.isfinite(grid)
    base = np.arange(rows) * width
    lo = base + np.where(ok, grid, np.inf).argmin(axis=1)
    hi = base + np.where(ok, grid, -np.inf).argmax(axis=1)
    gap = (base + (~ok).argmax(axis=1))[(~ok).any(axis=1)]
    idx = np.unique(np.concatenate([lo, hi, gap]))
    idx = idx[idx < n]
    return ts[idx], values[idx]


def _runs(ok: np.ndarray) -> list[tuple[int, int]]:
    """Return [start, end) index pairs of the runs of True in ok."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _nice_ticks(lo: float, hi: float, suffix: str = "") -> list[tuple[float, str]]:
    """Return about five round values in [lo, hi] with labels whose decimals follow the step."""
    raw = (hi - lo) / 5
    mag = 10.0 ** math.floor(math.log10(raw))
    r = raw / mag
    step = mag * (1 if r <= 1 else 2 if r <= 2 else 5 if r <= 5 else 10)
    decimals = max(0, -math.floor(math.log10(step)))
    ks = range(math.ceil(lo / step), math.floor(hi / step) + 1)
    return [(k * step, f"{k * step:,.{decimals}f}{suffix}") for k in ks]


def _time_ticks(t0: int, t1: int, n: int = 7) -> list[tuple[int, str]]:
    """Return at most about n round UTC times in [t0, t1] with date labels."""
    i = bisect_left(_TIME_STEPS, -(-(t1 - t0) // n))
    if i < len(_TIME_STEPS):
        step = _TIME_STEPS[i]
        fmt = "%Y-%m-%d" if step >= _DAY else "%Y-%m-%d %H:%M"
        return [(t, _utc(t, fmt)) for t in range(-(-t0 // step) * step, t1 + 1, step)]
    months = _MONTH_STEPS[min(bisect_left(_MONTH_STEPS, -(-(t1 - t0) // (n * 30 * _DAY))), len(_MONTH_STEPS) - 1)]
    start = _EPOCH + timedelta(milliseconds=t0)
    k = -(-(start.year * 12 + start.month - 1) // months) * months
    ticks = []
    while (t := (datetime(k // 12, k % 12 + 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)) <= t1:
        ticks.append((t, _utc(t, "%Y-%m")))
        k += months
    return [(t, label) for t, label in ticks if t >= t0]


def _chart(xdom: tuple[int, int], ts: np.ndarray, values: np.ndarray, height: int, cls: str,
           markers: Sequence[Marker] = (), area: bool = False, suffix: str = "") -> str:
    """Draw one SVG chart: grid, tick labels, the series as lines (or areas to zero) and markers."""
    t0, t1 = xdom
    ys = np.concatenate([values[np.isfinite(values)], [m.price for m in markers]] + ([[0.0]] if area else []))
    lo, hi = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or abs(lo) * 0.01 or 1.0
    lo, hi = lo - pad, hi + pad
    pw, ph = _W - _ML - _MR, height - _MT - _MB

    def fx(t: object) -> np.ndarray:
        return _ML + (np.asarray(t, dtype=np.float64) - t0) * (pw / (t1 - t0))

    def fy(v: object) -> np.ndarray:
        return _MT + (hi - np.asarray(v, dtype=np.float64)) * (ph / (hi - lo))

    out = [f'<svg class="chart chart-{cls}" viewBox="0 0 {_W} {height}" width="{_W}" height="{height}">']
    for v, label in _nice_ticks(lo, hi, suffix):
        y = fy(v)
        out.append(f'<line class="grid" x1="{_ML}" x2="{_W - _MR}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="yl" x="{_ML - 6}" y="{y + 4:.1f}">{escape(label)}</text>')
    for t, label in _time_ticks(t0, t1):
        x = fx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{_MT}" y2="{_MT + ph}"/>'
                   f'<text class="xl" x="{x:.1f}" y="{height - 6}">{escape(label)}</text>')
    out.append(f'<rect class="frame" x="{_ML}" y="{_MT}" width="{pw}" height="{ph}"/>')
    xs, ys = fx(ts), fy(values)
    for s, e in _runs(np.isfinite(ys)):
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs[s:e].tolist(), ys[s:e].tolist()))
        if area:
            zero = fy(0.0)
            out.append(f'<polygon class="{cls}" points="{xs[s]:.1f},{zero:.1f} {pts} {xs[e - 1]:.1f},{zero:.1f}"/>')
        else:
            out.append(f'<polyline class="line {cls}" points="{pts}"/>')
    for m in markers:
        x, y = float(fx(m.ts_ms)), float(fy(m.price))
        color, up = _MARKERS.get(m.kind, ("#888", 0))
        shape = ([(x, y), (x - 6, y + 10 * up), (x + 6, y + 10 * up)] if up
                 else [(x, y - 5), (x + 5, y), (x, y + 5), (x - 5, y)])
        tip = f"{m.kind} ({m.reason})\n{_utc(m.ts_ms)} UTC\n@ {_price(m.price)}"
        out.append(f'<polygon class="mk" data-kind="{escape(m.kind)}" fill="{color}" points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b in shape) + f'"><title>{escape(tip)}</title></polygon>')
    out.append("</svg>")
    return "".join(out)


def render_report(
    title: str,
    summary: Mapping[str, object],
    equity_ts_ms: np.ndarray,
    equity: np.ndarray,
    prices: Mapping[str, tuple[np.ndarray, np.ndarray]],
    markers: Sequence[Marker],
    max_points: int = 1500,
) -> str:
    """Render the whole report as one self-contained HTML document.

    Parameters
    ----------
    title : str
        Heading and document title.
    summary : Mapping[str, object]
        Rows of the table at the top, in the given order; values are shown with ``str``.
    equity_ts_ms, equity : np.ndarray
        Equity curve: strictly increasing UTC milliseconds and values of the same length.
    prices : Mapping[str, tuple[np.ndarray, np.ndarray]]
        Symbol to (UTC milliseconds, close); one chart per symbol, symbols sorted.
    markers : Sequence[Marker]
        Trade events; each must name a symbol present in ``prices``.
    max_points : int
        Most finite points per drawn series (at least 2).

    Returns
    -------
    str
        The HTML document; identical for identical inputs.

    Raises
    ------
    ConfigError
        If max_points is below 2.
    DataError
        If a series is empty, ragged or unordered, or a marker has no prices or a non-finite price.
    """
    if max_points < 2:
        raise ConfigError(f"max_points must be at least 2, got {max_points}")
    ets, eq = _series("equity", equity_ts_ms, equity)
    series = {sym: _series(f"prices[{sym!r}]", *prices[sym]) for sym in sorted(prices)}
    by_symbol: dict[str, list[Marker]] = {sym: [] for sym in series}
    for m in markers:
        if m.symbol not in series:
            raise DataError(f"marker {m.kind!r} at {_utc(m.ts_ms)} UTC is for symbol {m.symbol!r}, which has no prices")
        if not math.isfinite(m.price):
            raise DataError(f"marker {m.kind!r} for symbol {m.symbol!r} at {_utc(m.ts_ms)} UTC has price {m.price}")
        by_symbol[m.symbol].append(m)
    edges = np.concatenate([ets[[0, -1]], *(t[[0, -1]] for t, _ in series.values()),
                            np.array([m.ts_ms for m in markers], dtype=np.int64)])
    t0, t1 = int(edges.min()), int(edges.max())
    xdom = (t0, t1) if t1 > t0 else (t0 - _MIN, t1 + _MIN)
    peak = np.fmax.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (eq / peak - 1.0) * 100.0, np.nan)
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f'<h1>{escape(title)}</h1><p class="note">{_utc(t0, "%Y-%m-%d %H:%M")} to {_utc(t1, "%Y-%m-%d %H:%M")} UTC</p>',
        f'<table class="summary">{rows}</table>',
        '<section class="equity"><h2>Equity</h2>',
        _chart(xdom, *_decimate(ets, eq, max_points), 300, "equity"),
        '<h2>Drawdown <span class="note">(% below running peak)</span></h2>',
        _chart(xdom, *_decimate(ets, dd, max_points), 130, "dd", area=True, suffix="%"),
        "</section>",
    ]
    for sym, (ts, close) in series.items():
        ms = by_symbol[sym]
        counts = ", ".join(f"{sum(m.kind == k for m in ms)} {k}" for k in sorted({m.kind for m in ms}))
        out.append(f'<section class="symbol" data-symbol="{escape(sym)}"><h2>{escape(sym)} '
                   f'<span class="note">{escape(counts or "no markers")}</span></h2>'
                   + _chart(xdom, *_decimate(ts, close, max_points), 240, "price", ms) + "</section>")
    out.append("</body></html>\n")
    return "".join(out)


def write_report(path: Path, html: str) -> Path:
    """Write the report atomically: a temporary file in the same directory, fsync, then os.replace.

    Parameters
    ----------
    path : Path
        Destination file; its directory must exist.
    html : str
        The document, written as UTF-8.

    Returns
    -------
    Path
        The destination path.

    Raises
    ------
    OSError
        If the file cannot be written or replaced; the temporary file is removed and path is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
