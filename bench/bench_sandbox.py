"""Emulator throughput: requests per second for one full OHLC page (720 committed rows + the provisional one).

A single keep-alive client asks the Kraken emulator for ``OHLC?interval=5`` over 30 symbols of 5-minute
bars (one year), and the CoinAPI emulator for 720-item ``ohlcv/history`` pages, sequentially.
"""

from __future__ import annotations

import json
import time

import httpx

from backend.config.compose import compose_spec
from backend.data.simulator import simulate_ohlcv
from backend.sandbox import CoinApiEmulator, KrakenEmulator

START_MS = 1_735_689_600_000  # 2025-01-01
N_BARS = 365 * 288
REQUESTS = 300


def _rate(client: httpx.Client, paths: list[str], headers: dict[str, str]) -> tuple[float, int]:
    client.get(paths[0], headers=headers).raise_for_status()  # warm-up
    started = time.perf_counter()
    size = 0
    for path in paths:
        response = client.get(path, headers=headers)
        response.raise_for_status()
        size = len(response.content)
    return REQUESTS / (time.perf_counter() - started), size


def main() -> dict[str, float]:
    universe = compose_spec([]).universe
    started = time.perf_counter()
    bars = simulate_ohlcv(universe.symbols, universe.clusters, "5m", START_MS, N_BARS, seed=7)
    results: dict[str, float] = {"bars": bars.height, "simulate_seconds": round(time.perf_counter() - started, 2)}
    pairs = [a.kraken.altname for a in universe.assets]
    ids = [a.coinapi_symbol_id for a in universe.assets]
    started = time.perf_counter()
    with KrakenEmulator(bars, "5m", universe=universe) as kraken:
        results["kraken_build_seconds"] = round(time.perf_counter() - started, 2)
        with httpx.Client(base_url=kraken.base_url, timeout=30) as client:
            paths = [f"/0/public/OHLC?pair={pairs[i % 30]}&interval=5" for i in range(REQUESTS)]
            rate, size = _rate(client, paths, {})
    results["kraken_ohlc_721_rows_requests_per_second"] = round(rate, 1)
    results["kraken_ohlc_page_bytes"] = size
    with CoinApiEmulator(bars, "5m", universe=universe) as coinapi:
        with httpx.Client(base_url=coinapi.base_url, timeout=30) as client:
            paths = [
                f"/v1/ohlcv/{ids[i % 30]}/history?period_id=5MIN&time_start=2025-06-01T00:00:00Z&limit=720"
                for i in range(REQUESTS)
            ]
            rate, size = _rate(client, paths, {"X-CoinAPI-Key": "sandbox-key"})
    results["coinapi_ohlcv_720_items_requests_per_second"] = round(rate, 1)
    results["coinapi_ohlcv_page_bytes"] = size
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
