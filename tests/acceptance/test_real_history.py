"""Acceptance on real history: `acts backtest run=real` imports ../shared/data and runs the spine.

Skipped when the recorded data is absent (a clone without ../shared). Shortened to two symbols and
about fourteen months so that it stays a few seconds; the preset itself is what runs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from backend.data.shared_loader import default_shared_dir
from scripts.cli import main

pytestmark = pytest.mark.shared_data


def test_run_real_backtests_recorded_binance_history_and_replays_it(tmp_path: Path, acts_home: Path) -> None:
    if default_shared_dir() is None:
        pytest.skip("../shared/data is not available")
    run_dir = tmp_path / "real"
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "backtest",
            "run=real",
            "data.start=2023-01-01",
            "data.days=420",
            "data.symbols=[BTC,ETH]",
            "training.walk_forward.n_folds=2",
            "training.walk_forward.min_train_bars=4380",
            "model.global_model.n_estimators=30",
            "model.specialist.n_estimators=20",
            f"hydra.run.dir={run_dir}",
        ],
        out,
        err,
    )
    assert code == 0, err.getvalue()
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    # Two symbols of hourly bars over 420 days, as recorded (the lake keeps any gap as a gap).
    assert summary["symbols"] == 2 and 0 < summary["events"] <= 2 * 420 * 24
    assert summary["ledger_reconciles"] is True
    assert (acts_home / "lake" / "ohlcv" / "source=binance" / "timeframe=1h" / "symbol=BTC").is_dir()
    replay_out = io.StringIO()
    assert main(["replay", str(run_dir)], replay_out, io.StringIO()) == 0
    assert "identical" in replay_out.getvalue()


def test_run_real_5m_reads_the_recorded_five_minute_candles(tmp_path: Path) -> None:
    if default_shared_dir() is None:
        pytest.skip("../shared/data is not available")
    from backend.config.compose import compose_spec
    from backend.runs.runner import load_bars
    from backend.home import Home

    spec = compose_spec(["run=real_5m", "data.start=2025-03-01", "data.days=2", "data.symbols=[BTC,ETH]"])
    home = Home(tmp_path / "home")

    bars, snapshot = load_bars(spec, home, lambda _m: None)

    # binance_harthor holds every 5-minute bar of these two days for both symbols.
    assert bars.height == 2 * 2 * 288
    assert set(bars["ts"].diff().drop_nulls().unique().to_list()) <= {0, 300_000}
    assert sorted(snapshot) == [f"ohlcv/source=binance/timeframe=5m/symbol={s}/2025-03.parquet" for s in ("BTC", "ETH")]
