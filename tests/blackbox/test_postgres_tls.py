"""TLS from the PostgreSQL sink to the database (`sinks.postgres.tls_ca_file`), against a
PostgreSQL server of its own with `ssl = on` and a certificate made by the test."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pg
from harness import SIMPLE_SCHEMA, Server, event, run_cli, to_toml, wait_for
from tls_certs import CertFiles, make_certs


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[tuple[pg.PgCluster, CertFiles]]:
    cluster = pg.make_cluster()
    if cluster.external:
        pytest.skip("needs a private test cluster: its TLS settings are made by the test")
    assert isinstance(cluster, pg.PgCluster)
    try:
        # The server reads its key as its own user, and only from a file no one else can read.
        certs = make_certs(cluster.base / "tls")
        if os.geteuid() == 0:
            user = pwd.getpwnam(pg.PG_USER)
            for path in (certs.ca.parent, certs.ca, certs.cert, certs.key):
                os.chown(path, user.pw_uid, user.pw_gid)
        cluster.settings.update(
            {"ssl": "on", "ssl_cert_file": f"'{certs.cert}'", "ssl_key_file": f"'{certs.key}'"}
        )
        cluster.start()
        yield cluster, certs
    finally:
        cluster.destroy()


def sink(db: pg.PgDatabase, **settings: object) -> dict[str, object]:
    return {"sinks": {"postgres": {"url": db.url, **settings}}}


def test_tls_to_postgres_with_the_right_ca_delivers_over_tls(
    make_server: Callable[..., Server], tls_cluster: tuple[pg.PgCluster, CertFiles], tmp_path: Path
) -> None:
    cluster, certs = tls_cluster
    db = cluster.create_database("tls_ok")
    # A copy outside the cluster's folder: floodway reads it as its own user.
    ca = tmp_path / "db-ca.pem"
    shutil.copy(certs.ca, ca)
    server = make_server(sink(db, tls_ca_file=str(ca)))
    server.create_stream("s", SIMPLE_SCHEMA)
    assert server.ingest("s", [event(n) for n in range(10)])["accepted"] == 10
    wait_for(lambda: db.table_exists("public", "s") and db.count("public", "s") == 10, timeout=30,
             what="10 rows over TLS")
    encrypted = db.scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        " WHERE a.application_name = 'floodway' AND s.ssl AND a.datname = %s",
        (db.name,),
    )
    plain = db.scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        " WHERE a.application_name = 'floodway' AND NOT s.ssl AND a.datname = %s",
        (db.name,),
    )
    assert encrypted >= 1 and plain == 0, (encrypted, plain)
    assert server.get("/readyz").json()["sinks"]["postgres"] == "ok"


def test_tls_to_postgres_refuses_a_server_the_ca_did_not_sign(
    make_server: Callable[..., Server], tls_cluster: tuple[pg.PgCluster, CertFiles], tmp_path: Path
) -> None:
    cluster, _ = tls_cluster
    db = cluster.create_database("tls_wrong_ca")
    other = make_certs(tmp_path / "other", ca_name="some other CA")
    server = make_server(sink(db, tls_ca_file=str(other.ca)))
    server.create_stream("s", SIMPLE_SCHEMA)
    assert server.ingest("s", [event(1)])["accepted"] == 1  # the WAL keeps it
    wait_for(lambda: server.get("/readyz").json()["sinks"]["postgres"] == "degraded", timeout=15,
             what="postgres degraded")
    assert "certificate" in server.log().lower(), server.log()
    assert not db.table_exists("public", "s")


def test_tls_settings_that_cannot_work_are_refused_at_start(tmp_path: Path) -> None:
    ca = make_certs(tmp_path / "certs").ca
    url = "postgres://floodway@127.0.0.1:5432/telemetry"
    cases = [
        ({"url": url + "?sslmode=require"}, "sslmode=require needs sinks.postgres.tls_ca_file"),
        ({"url": url + "?sslmode=disable", "tls_ca_file": str(ca)}, "the URL says sslmode=disable"),
        ({"url": url, "tls_ca_file": str(tmp_path / "missing.pem")}, "sinks.postgres.tls_ca_file: cannot read"),
        ({"url": url, "tls_ca_file": str(tmp_path / "certs" / "server.key")}, "holds no PEM certificate"),
    ]
    for i, (settings, expected) in enumerate(cases):
        config = tmp_path / f"bad{i}.toml"
        config.write_text(to_toml({"sinks": {"postgres": settings}}))
        result = run_cli(["check", "--config", str(config)])
        assert result.returncode == 1, (settings, result.stderr)
        assert expected in result.stderr, (expected, result.stderr)
