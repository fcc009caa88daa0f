"""Shared test setup: CPU only, quiet JAX, no network."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # a unix socket path
        return True
    host = address[0] if isinstance(address, tuple) and address else None
    return isinstance(host, str) and (host in LOOPBACK or host.startswith("127."))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never touch the network: a connection to anything but the loopback interface (a
    local Ray instance) fails loudly."""
    connect = socket.socket.connect
    create_connection = socket.create_connection

    def guard_connect(self, address, *args, **kwargs):
        if not _is_loopback(address):
            raise RuntimeError(f"tests must not open network connections ({address!r})")
        return connect(self, address, *args, **kwargs)

    def guard_create(address, *args, **kwargs):
        if not _is_loopback(address):
            raise RuntimeError(f"tests must not open network connections ({address!r})")
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guard_connect)
    monkeypatch.setattr(socket, "create_connection", guard_create)
    yield


@pytest.fixture(scope="session")
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent
