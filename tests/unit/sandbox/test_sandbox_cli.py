"""`acts sandbox kraken|coinapi`: serves a folder, a lake or simulated bars until a bound or an interrupt."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
from sandbox_helpers import make_trades

from backend.config.schema import UniverseSpec
from backend.data.lake import write_ohlcv
from backend.sandbox import KrakenEmulator
from scripts.cli import main


def _serve(argv: list[str], requests: list[tuple[str, dict]]) -> tuple[int, str, str, list[httpx.Response]]:
    """Run the command in a thread, send ``requests`` once it listens, return (code, out, err, responses)."""
    out, err = io.StringIO(), io.StringIO()
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(argv, out, err)))
    thread.start()
    deadline = time.monotonic() + 30
    while "listening on" not in out.getvalue() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    responses = []
    match = re.search(r"listening on (http://\S+)", out.getvalue())
    if match:
        with httpx.Client(base_url=match.group(1), timeout=5) as client:
            responses = [client.get(path, headers=headers) for path, headers in requests]
    thread.join(30)
    return result.get("code", -1), out.getvalue(), err.getvalue(), responses


@pytest.fixture
def folder(tmp_path: Path, bars: pl.DataFrame) -> Path:
    bars.write_parquet(tmp_path / "bars.parquet")
    make_trades("BTC", 50).write_parquet(tmp_path / "trades.parquet")
    return tmp_path


def test_kraken_sandbox_serves_a_folder_for_a_bounded_number_of_requests(folder: Path) -> None:
    requests = [("/0/public/Trades?pair=XBTUSD&since=0", {}), ("/0/public/OHLC?pair=ETHUSD&interval=15", {})]
    code, out, _, responses = _serve(["sandbox", "kraken", "--data", str(folder), "--serve-requests", "2"], requests)
    assert code == 0
    assert "kraken emulator listening on http://127.0.0.1:" in out and "(3 symbols, 5m bars)" in out
    assert "served 2 requests" in out
    assert len(responses[0].json()["result"]["XXBTZUSD"]) == 50
    assert len(responses[1].json()["result"]["XETHZUSD"]) == 334


def test_coinapi_sandbox_serves_a_lake_with_faults_and_a_key(tmp_path: Path, bars: pl.DataFrame) -> None:
    write_ohlcv(tmp_path / "lake", bars.with_columns(source=pl.lit("kraken")), "5m")
    faults = tmp_path / "faults.yaml"
    faults.write_text("fail_5xx_every: 2\n")
    argv = ["sandbox", "coinapi", "--data", str(tmp_path / "lake"), "--faults", str(faults), "--api-key", "k1",
            "--serve-requests", "3"]  # fmt: skip
    path = "/v1/ohlcv/KRAKEN_SPOT_DOGE_USD/history?period_id=1HRS"
    code, out, _, responses = _serve(argv, [(path, {"X-CoinAPI-Key": "k1"})] * 2 + [(path, {})])
    assert code == 0
    assert [r.status_code for r in responses] == [200, 500, 401]
    assert len(responses[0].json()) == 84


def test_sandbox_serves_simulated_bars_until_max_seconds() -> None:
    argv = ["sandbox", "kraken", "--simulate-days", "2", "--timeframe", "1h", "--max-seconds", "0.3"]
    code, out, _, responses = _serve(argv, [("/0/public/OHLC?pair=SOLUSD&interval=60", {})])
    assert code == 0
    assert "(30 symbols, 1h bars)" in out
    assert len(responses[0].json()["result"]["SOLUSD"]) == 48


def test_sandbox_stops_cleanly_on_interrupt(folder: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    done = threading.Event()

    def interrupt_once_listening() -> None:
        while "listening on" not in out.getvalue() and not done.wait(0.01):
            pass
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    # Ctrl-C in a terminal raises KeyboardInterrupt; a process started in the background by a non-interactive
    # shell inherits SIGINT as ignored, so the terminal's disposition is set for the test and restored after.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = threading.Thread(target=interrupt_once_listening)
    thread.start()
    try:
        code = main(["sandbox", "kraken", "--data", str(folder), "--max-seconds", "20"], out, err)
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGINT, previous)
    assert code == 0
    assert "sandbox interrupted" in err.getvalue()
    assert "served 0 requests" in out.getvalue()


@pytest.mark.parametrize(
    ("layout", "extra", "message"),
    [
        ("empty", [], "holds neither a lake (ohlcv/) nor bars.parquet"),
        ("two_sources", [], "has 2 sources with 5m bars ['a', 'b']; choose one with --lake-source"),
        ("two_sources", ["--lake-source", "c"], "has no 5m bars of source 'c'"),
        ("broken", [], "cannot read"),
    ],
)
def test_sandbox_refuses_folders_it_cannot_serve(tmp_path: Path, bars: pl.DataFrame, layout: str, extra: list[str], message: str) -> None:
    if layout == "two_sources":
        for source in ("a", "b"):
            write_ohlcv(tmp_path, bars.head(3).with_columns(source=pl.lit(source)), "5m")
    if layout == "broken":
        (tmp_path / "bars.parquet").write_bytes(b"not parquet")
    err = io.StringIO()
    code = main(["sandbox", "kraken", "--data", str(tmp_path), "--max-seconds", "0", *extra], io.StringIO(), err)
    assert code == 2
    assert message in err.getvalue()


def test_sandbox_serves_the_chosen_lake_source(tmp_path: Path, bars: pl.DataFrame) -> None:
    for source in ("a", "b"):
        write_ohlcv(tmp_path, bars.filter(pl.col("symbol") == ("BTC" if source == "a" else "ETH")).with_columns(source=pl.lit(source)), "5m")
    code, out, _, responses = _serve(
        ["sandbox", "kraken", "--data", str(tmp_path), "--lake-source", "b", "--serve-requests", "1"],
        [("/0/public/Ticker", {})],
    )
    assert code == 0
    assert list(responses[0].json()["result"]) == ["XETHZUSD"]


def test_sandbox_refuses_a_bad_fault_file(tmp_path: Path, folder: Path) -> None:
    faults = tmp_path / "f.yaml"
    faults.write_text("timeout_every: -1\n")
    err = io.StringIO()
    assert main(["sandbox", "coinapi", "--data", str(folder), "--faults", str(faults)], io.StringIO(), err) == 2
    assert "'timeout_every' must be >= 1, was -1" in err.getvalue()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--simulate-days", "0"], "'--simulate-days' must be in [1, 5000], was 0"),
        (["--simulate-days", "1", "--port", "70000"], "'--port' must be in [0, 65535], was 70000"),
        (["--simulate-days", "1", "--max-seconds", "-1"], "'--max-seconds' must be in [0, 1000000000], was -1.0"),
        (["--simulate-days", "1", "--serve-requests", "0"], "'--serve-requests' must be in [1, 1000000000], was 0"),
    ],
)
def test_sandbox_refuses_out_of_range_flags(flags: list[str], message: str) -> None:
    err = io.StringIO()
    assert main(["sandbox", "kraken", *flags], io.StringIO(), err) == 2
    assert message in err.getvalue()


def test_sandbox_refuses_a_port_in_use(folder: Path, bars: pl.DataFrame, universe: UniverseSpec) -> None:
    with KrakenEmulator(bars, "5m", universe=universe) as running:
        port = running.base_url.rsplit(":", 1)[1]
        err = io.StringIO()
        assert main(["sandbox", "kraken", "--data", str(folder), "--port", port], io.StringIO(), err) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in err.getvalue()
