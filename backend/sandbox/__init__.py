"""Local emulators of the Kraken REST API (public, and private with test-made keys) and CoinAPI's market-data REST API, with fault injection.

The real endpoints and the emulators differ only in base URL: ``KrakenEmulator(bars).start()``
returns ``http://127.0.0.1:<port>``, which replaces ``https://api.kraken.com``.
"""

from backend.sandbox.coinapi import CoinApiEmulator
from backend.sandbox.faults import FaultSpec, load_fault_spec
from backend.sandbox.kraken import KrakenEmulator

__all__ = ["CoinApiEmulator", "FaultSpec", "KrakenEmulator", "load_fault_spec"]
