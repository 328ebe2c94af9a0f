"""Loopback HTTP plumbing shared by the emulators, and their common request pipeline.

A ``ThreadingHTTPServer`` bound to 127.0.0.1 (port 0 picks a free port) hands every GET to the
emulator's ``handle`` (and every POST, with its raw body: Kraken's private API); the emulator returns
a :class:`Response`. Transport faults (429, 5xx,
timeouts, truncated and malformed bodies) are applied here in one place; each API only says how
its error bodies look.
"""

from __future__ import annotations

import functools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import polars as pl

from backend.config.compose import compose_spec
from backend.config.schema import UniverseSpec
from backend.data.lake import TIMEFRAME_MS
from backend.errors import SandboxError
from backend.sandbox.bars import MarketData
from backend.sandbox.faults import Admission, FaultInjector, FaultKind, FaultSpec

MALFORMED_BODY = b"<html><head><title>200 OK</title></head><body>upstream sent garbage</body></html>"


@dataclass(frozen=True)
class Request:
    """One HTTP request as the emulator sees it: path, last value of each query parameter, headers.

    A POST carries its ``body`` byte for byte (signatures are computed over it); its form fields are
    in ``params`` as well.
    """

    method: str
    target: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """One HTTP response; ``delay_seconds`` is slept before it is written."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"
    delay_seconds: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client's connection pool is reused
    # Headers and body go out in separate writes; with Nagle on, each response waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "acts-sandbox/1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        split = urlsplit(self.path)
        self._answer(Request("GET", self.path, split.path, dict(parse_qsl(split.query, keep_blank_values=True)),
                             {k.lower(): v for k, v in self.headers.items()}))  # fmt: skip

    def do_POST(self) -> None:  # noqa: N802
        split = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if "json" not in headers.get("content-type", ""):
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        self._answer(Request("POST", self.path, split.path, params, headers, body))

    def _answer(self, request: Request) -> None:
        response = self.server.app(request)
        if response.delay_seconds:
            self.server.stopping.wait(response.delay_seconds)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Stay quiet: the emulator keeps its own request log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, app: Callable[[Request], Response]) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.app = app
        self.stopping = threading.Event()


class Emulator(ABC):
    """Base of the API emulators: data, faults, the loopback server and the request log.

    Subclasses implement :meth:`route` (the API) and :meth:`fault_response` (its error bodies), and
    may refuse a request before it is counted with :meth:`precheck` (authentication).
    """

    def __init__(
        self,
        bars: pl.DataFrame,
        timeframe: str = "5m",
        faults: FaultSpec = FaultSpec(),
        trades: pl.DataFrame | None = None,
        universe: UniverseSpec | None = None,
        now_ms: Callable[[], int] | None = None,
        port: int = 0,
    ) -> None:
        self.universe = universe if universe is not None else compose_spec([]).universe
        self.assets = {asset.symbol: asset for asset in sorted(self.universe.assets, key=lambda a: a.symbol)}
        self.data = MarketData(bars, timeframe, self.assets, trades)
        self.timeframe = timeframe
        self.bar_ms = TIMEFRAME_MS[timeframe]
        self._now_ms = now_ms
        clock = (lambda: now_ms() / 1000.0) if now_ms is not None else time.monotonic
        self.faults = FaultInjector(faults, clock)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log: list[tuple[str, str, int]] = []
        self._log_lock = threading.Lock()

    # ------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start serving on 127.0.0.1 in a background thread; return the base URL."""
        if self._server is None:
            try:
                self._server = _Server(self._port, self.handle)
            except OSError as error:
                raise SandboxError(f"cannot listen on 127.0.0.1:{self._port}: {error.strerror}") from error
            # A short poll interval makes stop() quick (shutdown waits for the loop to look).
            serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
            self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)
            self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        """Return ``http://127.0.0.1:<port>`` of the running server."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving; requests sleeping in a timeout fault are released."""
        server, self._server = self._server, None
        if server is not None:
            server.stopping.set()
            server.shutdown()
            server.server_close()
            self._thread.join()  # type: ignore[union-attr]

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- data
    def append_bars(self, bars: pl.DataFrame) -> None:
        """Let new bars arrive; a bar at an existing (symbol, ts) replaces the old one (thread-safe)."""
        self.data.append_bars(bars)

    @property
    def request_log(self) -> list[tuple[str, str, int]]:
        """Return (method, path with query, status) of every request so far, in order."""
        with self._log_lock:
            return list(self._log)

    def now_ms(self) -> int | None:
        """Return the injected now in UTC ms, or None when every bar is visible."""
        return self._now_ms() if self._now_ms is not None else None

    def wall_ms(self) -> int:
        """Return the injected now, or the wall clock when none was injected (server time endpoints)."""
        now = self.now_ms()
        return now if now is not None else time.time_ns() // 1_000_000

    # ------------------------------------------------------------- pipeline
    def handle(self, request: Request) -> Response:
        """Answer one request: precheck, count, inject transport faults, route."""
        response = self.precheck(request)
        if response is None:
            admission = self.faults.admit()
            if admission.fault in (FaultKind.RATE_LIMITED, FaultKind.FAIL_429, FaultKind.FAIL_5XX):
                response = self.fault_response(admission)
            else:
                response = self.route(request, admission)
                response = _corrupt(response, admission, self.faults.spec)
        with self._log_lock:
            self._log.append((request.method, request.target, response.status))
        return response

    @abstractmethod
    def precheck(self, request: Request) -> Response | None:
        """Return a refusal that does not count as a request (e.g. a bad key), or None."""

    @abstractmethod
    def route(self, request: Request, admission: Admission) -> Response:
        """Answer a counted request that drew no refusing fault."""

    @abstractmethod
    def fault_response(self, admission: Admission) -> Response:
        """Answer a request refused by a rate limit, an injected 429 or an injected 5xx."""


def _corrupt(response: Response, admission: Admission, spec: FaultSpec) -> Response:
    if admission.fault is FaultKind.TIMEOUT:
        return replace(response, delay_seconds=spec.timeout_seconds)
    if admission.fault is FaultKind.TRUNCATE:
        return replace(response, body=response.body[: len(response.body) // 2])
    if admission.fault is FaultKind.MALFORMED:
        return replace(response, body=MALFORMED_BODY, content_type="text/html")
    return response
