"""CoinAPI market data REST: OHLCV history paged by time, trades history (``X-CoinAPI-Key``)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime


from backend.config.schema import AssetSpec
from backend.data.lake import TIMEFRAME_MS
from backend.data.normalize import batch_id_for, parse_coinapi_ohlcv
from backend.data.providers.base import Fetched, Fetcher, OhlcvPage, closed_since

PERIOD_IDS = {"1m": "1MIN", "5m": "5MIN", "15m": "15MIN", "1h": "1HRS", "4h": "4HRS", "1d": "1DAY"}
MAX_LIMIT = 100_000


def iso_ms(ts_ms: int) -> str:
    """Return ``YYYY-MM-DDTHH:MM:SS.fffZ`` for UTC milliseconds."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


class CoinApiProvider:
    """OHLCV from ``GET /v1/ohlcv/{symbol_id}/history``, ``limit`` items a page, ``time_start`` the cursor.

    Parameters
    ----------
    fetcher : Fetcher
        HTTP shell carrying the ``X-CoinAPI-Key`` header.
    page_limit : int
        Items per page, 1..100,000 (CoinAPI bills one credit per 100 items).
    source : str
        Lake source name of the bars.
    """

    confirms_gaps = True  # a [time_start, time_end) window answered empty has no bar

    def __init__(self, fetcher: Fetcher, page_limit: int = MAX_LIMIT, source: str = "coinapi") -> None:
        self.fetcher = fetcher
        self.page_limit = page_limit
        self.source = source

    def history_start_ms(self, asset: AssetSpec) -> int | None:
        """Return the UTC day the symbol's data starts (``data_start`` of ``/v1/symbols``), or None."""
        fetched = self.fetcher.get("/v1/symbols", {"filter_symbol_id": asset.coinapi_symbol_id})
        try:
            items = json.loads(fetched.body)
            (item,) = [i for i in items if isinstance(i, dict) and i.get("symbol_id") == asset.coinapi_symbol_id]
            day = date.fromisoformat(item["data_start"][:10])
        except (ValueError, TypeError, KeyError):  # not JSON, not one matching item, no usable date
            return None
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)

    def fetch(self, asset: AssetSpec, timeframe: str, cursor_ms: int, end_ms: int | None = None) -> tuple[Fetched, ...]:
        """Request up to ``page_limit`` bars opening in ``[cursor_ms, end_ms)``."""
        params: dict[str, object] = {"period_id": PERIOD_IDS[timeframe], "time_start": iso_ms(cursor_ms),
                                     "limit": self.page_limit}  # fmt: skip
        if end_ms is not None:
            params["time_end"] = iso_ms(end_ms)
        return (self.fetcher.get(f"/v1/ohlcv/{asset.coinapi_symbol_id}/history", params),)

    def parse(
        self, fetched: tuple[Fetched, ...], asset: AssetSpec, timeframe: str, cursor_ms: int, now_ms: int
    ) -> OhlcvPage:
        """Keep the closed bars at or after the cursor; the page is the last when it was not full."""
        (page,) = fetched
        batch_id = batch_id_for(self.source, [page.record.sha256])
        bars = parse_coinapi_ohlcv(page.body, asset.symbol, timeframe, self.source, batch_id)
        closed, next_cursor = closed_since(bars, cursor_ms, TIMEFRAME_MS[timeframe], now_ms)
        complete = bars.height < self.page_limit or closed.height < bars.height
        return OhlcvPage(closed, (page.record,), next_cursor, complete)

    def fetch_trades(self, asset: AssetSpec, time_start_ms: int, limit: int = MAX_LIMIT) -> Fetched:
        """Request trades of one UTC day from ``time_start_ms`` (kept raw; CoinAPI pages trades per day)."""
        params = {"time_start": iso_ms(time_start_ms), "limit": limit}
        return self.fetcher.get(f"/v1/trades/{asset.coinapi_symbol_id}/history", params)
