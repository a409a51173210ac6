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


# -- PostgreSQL (tests of the PostgreSQL sink) -----------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL server for the session (see pg.py), stopped at the end.

    Started only when a test asks for it. $FLOODWAY_TEST_POSTGRES_URL: use that server.
    """
    import pg

    try:
        cluster = pg.make_cluster()
    except pg.PgError as exc:
        pytest.fail(str(exc), False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_db(pg_cluster: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh, empty database for one test (a pg.PgDatabase: .url, .query(), .scalar())."""
    pg_cluster.ensure_running()  # a failed outage test may have left it stopped
    db = pg_cluster.create_database(request.node.name)
    yield db
    try:
        pg_cluster.ensure_running()
        pg_cluster.drop_database(db)
    except Exception:  # noqa: BLE001 - the server is thrown away at the end anyway
        pass


# -- S3-compatible object store (tests of the s3:// Parquet target) ---------------------------


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[Any]:
    """A running s3s-fs (see s3.py) with the bucket s3.BUCKET, killed at teardown.

    Its folder is tmp_path/s3; the test may stop() and start() it (same port, same objects).
    """
    import s3

    try:
        server = s3.S3Server(tmp_path / "s3")
    except s3.S3Error as exc:
        pytest.fail(str(exc), False)
    try:
        server.start()
        server.create_bucket(s3.BUCKET)
        yield server
    finally:
        server.kill()
