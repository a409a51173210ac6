"""Fixtures for the black-box tests. See harness.py for the `Server` helper class."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Server, floodway_bin

__all__ = ["Server"]


@pytest.fixture(scope="session", autouse=True)
def binary() -> Path:
    """The floodway binary under test ($FLOODWAY_BIN or target/debug/floodway) must exist."""
    path = floodway_bin()
    if not path.is_file():
        pytest.fail(f"floodway binary not found at {path}: build it or set FLOODWAY_BIN", False)
    return path


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: make_server(config_overrides, start=True, **Server kwargs) -> Server.

    Each server gets its own folder under tmp_path; all are killed at teardown.
    """
    servers: list[Server] = []

    def make(config: dict[str, Any] | None = None, *, start: bool = True, **kwargs: Any) -> Server:
        root = kwargs.pop("root", None) or tmp_path / f"server{len(servers)}"
        server = Server(root, config, **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """A running server with the default test config."""
    return make_server()
