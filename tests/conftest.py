"""Shared test setup: CPU only, quiet JAX, no network."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never touch the network: any socket connection attempt fails loudly."""

    def guard(*args, **kwargs):
        raise RuntimeError("tests must not open network connections")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket, "create_connection", guard)
    yield


@pytest.fixture(scope="session")
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent
