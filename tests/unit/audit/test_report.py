"""Tests for backend.audit.report: structure, markers, downsampling, gaps, formatting, errors, atomic write."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from backend.audit.report import Marker, render_report, write_report
from backend.errors import ActsError, ConfigError, DataError

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
STEP = 300_000  # 5 minutes
COLORS = {"entry": "#1a9641", "exit": "#d7191c", "scale_out": "#f28e2b", "reentry": "#2c7bb6", "stop": "#888"}


def _ts(n: int, start: int = T0, step: int = STEP) -> np.ndarray:
    return start + np.arange(n, dtype=np.int64) * step


def _render(n: int = 100, prices=None, markers=(), summary=None, equity=None, **kw) -> str:
    ts = _ts(n)
    eq = np.linspace(100.0, 120.0, n) if equity is None else equity
    prices = {"BTC": (ts, np.linspace(60_000.0, 61_000.0, n))} if prices is None else prices
    return render_report("Run", summary or {"k": 1}, ts, eq, prices, markers, **kw)


def _root(html: str) -> ET.Element:
    return ET.fromstring(html)


def _sections(root: ET.Element) -> dict[str, ET.Element]:
    return {s.get("data-symbol"): s for s in root.iter("section") if s.get("class") == "symbol"}


def _points(el: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in el.get("points").split()]


def _chart_svg(root: ET.Element, cls: str) -> ET.Element:
    return next(s for s in root.iter("svg") if s.get("class") == f"chart chart-{cls}")


def _labels(svg: ET.Element, cls: str) -> list[str]:
    return [t.text for t in svg.iter("text") if t.get("class") == cls]


def test_render_draws_one_chart_per_symbol_in_sorted_order():
    ts = _ts(50)
    prices = {s: (ts, np.full(50, 1.0 + i)) for i, s in enumerate(["SOL", "BTC", "ETH"])}
    root = _root(_render(50, prices=prices))
    assert list(_sections(root)) == ["BTC", "ETH", "SOL"]
    assert all(len(list(sec.iter("svg"))) == 1 for sec in _sections(root).values())


def test_render_counts_markers_per_kind_in_each_chart():
    ts = _ts(200)
    prices = {"BTC": (ts, np.linspace(1, 2, 200)), "ETH": (ts, np.linspace(3, 4, 200))}
    plan = {"BTC": {"entry": 3, "exit": 2, "scale_out": 1}, "ETH": {"reentry": 2, "stop": 1, "entry": 1}}
    markers = [Marker(sym, int(ts[i * 7 + j]), 1.5 if sym == "BTC" else 3.5, kind, f"r{i}")
               for sym, kinds in plan.items() for j, (kind, count) in enumerate(kinds.items()) for i in range(count)]
    sections = _sections(_root(_render(200, prices=prices, markers=markers)))
    for sym, kinds in plan.items():
        found = [p.get("data-kind") for p in sections[sym].iter("polygon") if p.get("class") == "mk"]
        assert {k: found.count(k) for k in set(found)} == kinds
    assert "1 entry, 2 reentry, 1 stop" in "".join(sections["ETH"].find("h2").itertext())
    assert "no markers" not in "".join(sections["BTC"].find("h2").itertext())


def test_render_says_no_markers_for_a_symbol_without_trades():
    assert "no markers" in "".join(_sections(_root(_render()))["BTC"].find("h2").itertext())


@pytest.mark.parametrize(("kind", "apex"), [("entry", "up"), ("reentry", "up"), ("exit", "down"),
                                            ("scale_out", "down"), ("stop", "diamond")])
def test_marker_kind_sets_color_and_shape(kind, apex):
    html = _render(markers=[Marker("BTC", T0 + 50 * STEP, 60_500.0, kind, "why")])
    mk = next(p for p in _root(html).iter("polygon") if p.get("class") == "mk")
    pts = _points(mk)
    assert mk.get("fill") == COLORS[kind]
    if apex == "diamond":
        assert len(pts) == 4
    else:
        body_y = pts[1][1]
        assert len(pts) == 3 and pts[1][1] == pts[2][1]
        assert (body_y > pts[0][1]) == (apex == "up")


def test_marker_title_shows_kind_reason_utc_time_and_price():
    html = _render(markers=[Marker("BTC", T0 + 3 * STEP + 1234, 60_123.456, "entry", "rsi<30 & trend")])
    title = next(next(_root(html).iter("body")).iter("title")).text
    assert title.splitlines() == ["entry (rsi<30 & trend)", "2024-01-01 00:15:01 UTC", "@ 60,123.46"]
    assert "rsi&lt;30 &amp; trend" in html


@pytest.mark.parametrize(("price", "text"), [(0.0000123456, "@ 0.0000123456"), (60_123.45, "@ 60,123.45"),
                                             (0.0, "@ 0.00"), (-2.5, "@ -2.50000")])
def test_marker_price_is_readable_for_tiny_and_huge_prices(price, text):
    ts = _ts(10)
    html = _render(10, prices={"X": (ts, np.full(10, price))}, markers=[Marker("X", T0, price, "exit", "r")])
    assert next(next(_root(html).iter("body")).iter("title")).text.splitlines()[-1] == text


@pytest.mark.parametrize("frac", [0.0, 0.25, 0.5, 1.0])
def test_marker_sits_at_its_exact_time_and_price(frac):
    ts = _ts(101)
    ts_ms = int(T0 + frac * 100 * STEP) + (7 if frac < 1 else 0)  # off the price grid
    html = _render(101, prices={"BTC": (ts, np.linspace(10.0, 20.0, 101))},
                   markers=[Marker("BTC", ts_ms, 25.0, "entry", "r")])
    svg = _sections(_root(html))["BTC"].find("svg")
    frame = svg.find("rect")
    x0, width, top = float(frame.get("x")), float(frame.get("width")), float(frame.get("y"))
    apex = _points(next(p for p in svg.iter("polygon") if p.get("class") == "mk"))[0]
    assert apex[0] == pytest.approx(x0 + width * (ts_ms - T0) / (100 * STEP), abs=0.06)
    assert top <= apex[1] < top + 0.1 * float(frame.get("height"))  # 25.0 is above every price yet in frame


def test_summary_keeps_key_order_and_escapes_values():
    summary = {"spec_hash": "ab12", "final_equity": 123.5, "<k>": "<b>x</b> & 'q'"}
    html = _render(summary=summary)
    table = next(_root(html).iter("table"))
    assert [(r.find("th").text, r.find("td").text) for r in table] == [
        ("spec_hash", "ab12"), ("final_equity", "123.5"), ("<k>", "<b>x</b> & 'q'")]
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &#x27;q&#x27;" in html and "<b>x</b>" not in html


def test_title_and_symbol_are_escaped():
    ts = _ts(10)
    html = render_report("A<B>", {}, ts, np.ones(10), {"<S>": (ts, np.ones(10))}, [Marker("<S>", T0, 1.0, "e<", "r")])
    root = _root(html)
    assert root.find("head/title").text == "A<B>" and next(root.iter("h1")).text == "A<B>"
    assert list(_sections(root)) == ["<S>"]
    assert "<S>" not in html and "A<B>" not in html


@pytest.mark.parametrize("max_points", [2, 3, 100, 1500])
def test_downsampling_keeps_at_most_max_points_per_chart(max_points):
    n = 105_120
    rng = np.random.default_rng(1)
    ts = _ts(n)
    prices = {"BTC": (ts, 60_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n))))}
    root = _root(_render(n, prices=prices, equity=100 * np.exp(np.cumsum(rng.normal(0, 0.001, n))),
                         max_points=max_points))
    for svg in root.iter("svg"):
        for line in svg.iter("polyline"):
            assert 2 <= len(_points(line)) <= max_points
        for area in (p for p in svg.iter("polygon") if p.get("class") == "dd"):
            assert len(_points(area)) <= max_points + 2  # plus the two baseline corners
    assert len(list(root.iter("polyline"))) == 2


def test_short_series_is_drawn_point_for_point():
    root = _root(_render(40))
    assert [len(_points(p)) for p in root.iter("polyline")] == [40, 40]


def test_downsampling_keeps_a_one_point_spike():
    n = 50_000
    close = np.ones(n)
    close[31_337] = 2.0
    svg = _sections(_root(_render(n, prices={"BTC": (_ts(n), close)}, max_points=100)))["BTC"].find("svg")
    frame = svg.find("rect")
    top = min(y for _, y in _points(svg.find("polyline")))
    assert top < float(frame.get("y")) + 0.1 * float(frame.get("height"))


@pytest.mark.parametrize("n", [100, 20_000])
def test_nan_gap_splits_lines_into_two_segments(n):
    values = np.linspace(1.0, 2.0, n)
    values[n // 2: n // 2 + n // 20] = np.nan
    values[0] = np.nan  # a leading NaN is skipped, not a segment
    root = _root(_render(n, prices={"BTC": (_ts(n), values)}, equity=values * 100, max_points=500))
    price = _sections(root)["BTC"].find("svg")
    assert len(list(price.iter("polyline"))) == 2
    assert len(list(_chart_svg(root, "equity").iter("polyline"))) == 2
    assert len([p for p in _chart_svg(root, "dd").iter("polygon") if p.get("class") == "dd"]) == 2
    first, second = (_points(p) for p in price.iter("polyline"))
    assert first[-1][0] < second[0][0]


def test_all_nan_prices_draw_a_frame_without_line():
    ts = _ts(10)
    root = _root(_render(10, prices={"BTC": (ts, np.full(10, np.nan))}))
    svg = _sections(root)["BTC"].find("svg")
    assert svg.find("rect") is not None and svg.find("polyline") is None


def test_non_positive_equity_has_no_drawdown_area():
    root = _root(_render(20, equity=np.linspace(-5.0, 5.0, 20) * 0))
    assert [p for p in _chart_svg(root, "dd").iter("polygon") if p.get("class") == "dd"] == []
    assert len(list(_chart_svg(root, "equity").iter("polyline"))) == 1


def test_drawdown_is_percent_below_running_peak():
    equity = np.array([100.0, 120.0, 90.0, 130.0])
    dd = _chart_svg(_root(_render(4, equity=equity)), "dd")
    assert any(label.endswith("%") for label in _labels(dd, "yl"))
    ys = [y for _, y in _points(next(p for p in dd.iter("polygon") if p.get("class") == "dd"))]
    assert ys[0] == ys[1] == ys[2] == ys[-1] and max(ys) == ys[3]  # baseline, 0, 0, -25 %, 0, baseline


def test_single_point_series_renders_around_its_time():
    ts = np.array([T0], dtype=np.int64)
    root = _root(render_report("R", {}, ts, np.array([5.0]), {"BTC": (ts, np.array([0.0]))}, []))
    labels = _labels(_chart_svg(root, "equity"), "xl")
    assert "2024-01-01 00:00" in labels and len(labels) == 3


def test_render_is_deterministic():
    ts = _ts(3000)
    prices = {"B": (ts, np.sin(np.arange(3000.0)) + 2), "A": (ts, np.cos(np.arange(3000.0)) + 2)}
    markers = [Marker("A", T0 + 5, 2.0, "entry", "x"), Marker("B", T0 + 9, 2.5, "exit", "y")]
    assert _render(3000, prices=prices, markers=markers, max_points=300) == _render(
        3000, prices=dict(reversed(prices.items())), markers=markers, max_points=300)


def test_output_is_self_contained():
    html = _render(markers=[Marker("BTC", T0, 60_000.0, "entry", "r")])
    for needle in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert needle not in html
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")


@pytest.mark.parametrize(("base", "pattern"), [
    (0.00001, r"0\.000\d+"),
    (60_000.0, r"\d\d,\d{3}"),
    (1.5, r"\d\.\d+"),
])
def test_price_axis_labels_fit_the_price_scale(base, pattern):
    close = base * np.linspace(0.95, 1.1, 200)
    svg = _sections(_root(_render(200, prices={"X": (_ts(200), close)})))["X"].find("svg")
    labels = _labels(svg, "yl")
    assert 3 <= len(labels) <= 12 and len(set(labels)) == len(labels)
    assert all(re.fullmatch(pattern, label) for label in labels)
    values = [float(label.replace(",", "")) for label in labels]
    assert min(values) >= base * 0.94 and max(values) <= base * 1.11


@pytest.mark.parametrize(("span_ms", "pattern"), [
    (3_600_000, r"2024-01-01 \d\d:\d\d"),
    (20 * 86_400_000, r"2024-01-\d\d"),
    (365 * 86_400_000, r"20\d\d-\d\d"),
    (50 * 365 * 86_400_000, r"20\d\d-\d\d"),
    (300 * 365 * 86_400_000, r"2\d\d\d-01"),
])
def test_time_axis_labels_are_utc_dates_at_the_right_grain(span_ms, pattern):
    ts = np.array([T0 + 86_400_000 // 2, T0 + 86_400_000 // 2 + span_ms], dtype=np.int64)
    root = _root(render_report("R", {}, ts, np.array([1.0, 2.0]), {}, []))
    svg = _chart_svg(root, "equity")
    labels = _labels(svg, "xl")
    frame = svg.find("rect")
    xs = [float(t.get("x")) for t in svg.iter("text") if t.get("class") == "xl"]
    assert 2 <= len(labels) <= 8 and all(re.fullmatch(pattern, label) for label in labels)
    assert all(float(frame.get("x")) <= x <= float(frame.get("x")) + float(frame.get("width")) for x in xs)
    assert labels == sorted(labels)


@pytest.mark.parametrize(("kwargs", "error", "needle"), [
    ({"max_points": 1}, ConfigError, "max_points"),
    ({"equity_ts_ms": np.array([], dtype=np.int64), "equity": np.array([])}, DataError, "equity: series is empty"),
    ({"equity": np.ones(9)}, DataError, "equity: timestamps (10,) and values (9,)"),
    ({"equity": np.ones((10, 1))}, DataError, "equity"),
    ({"equity_ts_ms": np.full(10, T0)}, DataError, "equity: timestamps must be strictly increasing"),
    ({"prices": {"ETH": (_ts(10), np.ones(3))}}, DataError, "prices['ETH']"),
    ({"prices": {"ETH": (_ts(0), np.ones(0))}}, DataError, "prices['ETH']: series is empty"),
    ({"markers": [Marker("DOGE", T0, 1.0, "entry", "r")]}, DataError, "'DOGE', which has no prices"),
    ({"markers": [Marker("BTC", T0, float("nan"), "exit", "r")]}, DataError, "'BTC'"),
    ({"markers": [Marker("BTC", T0, float("inf"), "exit", "r")]}, DataError, "has price inf"),
])
def test_render_rejects_bad_input_with_a_clear_error(kwargs, error, needle):
    args = {"title": "R", "summary": {}, "equity_ts_ms": _ts(10), "equity": np.ones(10),
            "prices": {"BTC": (_ts(10), np.ones(10))}, "markers": []} | kwargs
    with pytest.raises(error) as info:
        render_report(**args)
    assert isinstance(info.value, ActsError) and needle in str(info.value)


def test_write_report_replaces_the_file_atomically(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    html = _render(summary={"title": "€ unicode ✓"})
    assert write_report(target, html) == target
    assert target.read_text(encoding="utf-8") == html
    assert os.listdir(tmp_path) == ["report.html"]
    assert target.stat().st_mode & 0o644 == 0o644


def test_write_report_accepts_a_str_path_and_returns_a_path(tmp_path):
    assert write_report(str(tmp_path / "r.html"), "<html></html>") == tmp_path / "r.html"
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == "<html></html>"


def test_write_report_failure_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(OSError):
        write_report(target, "<html></html>")
    assert os.listdir(tmp_path) == ["taken"] and target.is_dir()


def test_write_report_into_missing_directory_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(Path(tmp_path / "nope" / "r.html"), "x")
