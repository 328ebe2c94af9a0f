"""A real Secret Service for tests: a private D-Bus session bus and an unlocked gnome-keyring daemon.

Both run with HOME and the XDG folders inside a temporary folder, so nothing touches the user's
keyring; both are stopped by their own PID (never by name).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextmanager
def secret_service(root: Path) -> Iterator[dict[str, str]]:
    """Start the bus and the keyring under ``root``; yield the environment a client needs."""
    home = root / "home"
    runtime = root / "run"
    for folder in (home, runtime, home / ".local" / "share", home / ".config", home / ".cache"):
        folder.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    env = {
        **os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
    }  # fmt: skip
    address = f"unix:path={runtime / 'bus'}"
    bus = subprocess.Popen(
        [shutil.which("dbus-daemon") or "dbus-daemon", "--session", "--nofork", f"--address={address}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    keyring_daemon = None
    try:
        for _ in range(200):
            if (runtime / "bus").exists():
                break
            time.sleep(0.02)
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        keyring_daemon = subprocess.Popen(
            [shutil.which("gnome-keyring-daemon") or "gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        keyring_daemon.stdin.write(b"acts-test-keyring-password")  # type: ignore[union-attr]
        keyring_daemon.stdin.close()  # type: ignore[union-attr]
        _wait_for_secrets(address)
        yield {"DBUS_SESSION_BUS_ADDRESS": address, "XDG_RUNTIME_DIR": str(runtime)}
    finally:
        if keyring_daemon is not None:
            _stop(keyring_daemon)
        _stop(bus)


def _wait_for_secrets(address: str) -> None:
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    target = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open_dbus_connection(bus=address) as conn:
            names = conn.send_and_get_reply(new_method_call(target, "ListNames")).body[0]
        if "org.freedesktop.secrets" in names and _default_collection_unlocked(address):
            return
        time.sleep(0.05)
    raise RuntimeError("gnome-keyring-daemon did not offer an unlocked default collection within 10 s")


def _default_collection_unlocked(address: str) -> bool:
    """Whether the daemon's default collection exists and is unlocked (on a loaded machine the bus name comes first)."""
    from jeepney.io.blocking import open_dbus_connection
    from secretstorage.collection import Collection
    from secretstorage.exceptions import SecretStorageException

    with open_dbus_connection(bus=address) as conn:
        try:
            return not Collection(conn).is_locked()
        except SecretStorageException:
            return False
