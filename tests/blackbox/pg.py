"""A throwaway PostgreSQL server for the black-box tests of the PostgreSQL sink.

`PgCluster` runs its own cluster: `initdb` into a fresh temporary folder, trust
authentication on loopback only, a free port, the unix socket inside that folder, and no
fsync (the tests never need the database to survive a power cut). It is started with
`pg_ctl start -w` and stopped with `pg_ctl stop -m fast`. `stop()` and `start()` may be
called again by a test to simulate an outage: the server comes back on the same port with
the same data.

initdb and postgres refuse to run as root. When the tests run as root, every server
command runs as the `postgres` system user (created by Debian's package; created here with
useradd when missing) through `runuser`.

The server binaries are taken from $FLOODWAY_TEST_PG_BIN, else the newest
/usr/lib/postgresql/*/bin, else initdb and pg_ctl on PATH.

`ExternalPg` is used instead when $FLOODWAY_TEST_POSTGRES_URL names an existing server: it
only creates and drops databases there, and cannot be stopped or started.

Every wait is bounded; every subprocess has a timeout.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from harness import free_port, port_is_open

PG_USER = "postgres"  # the database superuser and, when running as root, the OS user
START_TIMEOUT = 60  # seconds for pg_ctl start -w
STOP_TIMEOUT = 30  # seconds for pg_ctl stop -w
COMMAND_TIMEOUT = 120  # seconds for initdb and other one-off commands
CONNECT_TIMEOUT = 5  # seconds for a client connection

_db_counter = itertools.count(1)


class PgError(RuntimeError):
    """The throwaway server could not be set up, started or stopped."""


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None when there is none."""
    env = os.environ.get("FLOODWAY_TEST_PG_BIN")
    if env:
        return Path(env)

    def version_key(path: str) -> tuple[int, ...]:
        version = Path(path).parent.name
        return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True):
        if _has_server_tools(Path(candidate)):
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        folder = Path(initdb).resolve().parent
        if _has_server_tools(folder):
            return folder
    return None


def _has_server_tools(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def url_with_database(url: str, dbname: str) -> str:
    """`url` (postgres://user[:password]@host:port/db?...) pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def quote_ident(name: str) -> str:
    """A PostgreSQL quoted identifier (for names made by the tests, not for event data)."""
    return '"' + name.replace('"', '""') + '"'


def connect(url: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to `url` whose session time zone is UTC."""
    return psycopg.connect(
        url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, options="-c TimeZone=UTC"
    )


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement (autocommit) on the database at `url`; its rows, or [] if none."""
    with connect(url) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def _sanitize(label: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_")
    return cleaned[:40] or "db"


class PgDatabase:
    """One database of the test server: its URL and a query helper."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name

    def __str__(self) -> str:
        return self.url

    def url_with(self, *, password: str | None = None, port: int | None = None) -> str:
        """This database's URL with a password and/or another port put in."""
        parts = urlsplit(self.url)
        user = parts.username or PG_USER
        host = parts.hostname or "127.0.0.1"
        netloc = user + (f":{password}" if password is not None else "")
        netloc += f"@{host}:{port if port is not None else parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return query(self.url, sql, params)

    def scalar(self, sql: str, params: Any = None) -> Any:
        rows = self.query(sql, params)
        assert len(rows) == 1 and len(rows[0]) == 1, f"expected one value from {sql!r}: {rows!r}"
        return rows[0][0]

    def execute(self, sql: str, params: Any = None) -> None:
        self.query(sql, params)

    def table_exists(self, schema: str, table: str) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s",
                (schema, table),
            )
        )

    def tables(self, schema: str) -> list[str]:
        """Names of the tables (plain and partitioned) in `schema`."""
        rows = self.query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            (schema,),
        )
        return [r[0] for r in rows]

    def count(self, schema: str, table: str) -> int:
        """count(*) of a table; 0 when the table does not exist yet."""
        if not self.table_exists(schema, table):
            return 0
        return int(self.scalar(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}"))


class PgCluster:
    """A private PostgreSQL server in a temporary folder; see the module docstring."""

    external = False

    def __init__(self, bin_dir: Path, settings: dict[str, str] | None = None) -> None:
        """`settings`: postgresql.conf values (as SQL literals) on top of the test ones."""
        self.bin_dir = bin_dir
        self.settings = dict(settings or {})
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="floodway-pg-"))
        self.data_dir = self.base / "data"
        self.log_path = self.base / "server.log"
        self.port = 0
        self.initialized = False
        self._ever_started = False

    # -- commands ------------------------------------------------------------------------

    def _run(
        self, args: list[str], timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["TZ"] = "UTC"
        try:
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                cwd=self.base,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgError(
                f"{' '.join(argv)} did not finish within {timeout}s\n{self.log()}"
            ) from exc

    def _ensure_os_user(self) -> None:
        try:
            pwd.getpwnam(PG_USER)
            return
        except KeyError:
            pass
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/bin/sh",
                PG_USER,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if result.returncode != 0:
            raise PgError(f"useradd {PG_USER} failed: {result.stderr.strip()}")

    def log(self, tail: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_bytes().decode(errors="replace")
        return f"--- postgres log ({self.log_path}) ---\n{text[-tail:]}"

    # -- lifecycle -----------------------------------------------------------------------

    def init(self) -> None:
        """initdb into the temporary folder and write the test settings."""
        if self.as_root:
            self._ensure_os_user()
            user = pwd.getpwnam(PG_USER)
            os.chown(self.base, user.pw_uid, user.pw_gid)
        os.chmod(self.base, 0o700)
        result = self._run(
            [
                "initdb",
                "-D", str(self.data_dir),
                "-U", PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )  # fmt: skip
        if result.returncode != 0:
            raise PgError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        self.port = free_port()
        self._write_settings()
        self.initialized = True

    def _write_settings(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            **self.settings,
        }
        # postgresql.auto.conf is read last, so these win over postgresql.conf.
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        auto = self.data_dir / "postgresql.auto.conf"
        with open(auto, "a") as file:
            file.write("# floodway black-box tests\n" + text)

    def start(self) -> None:
        """Start the server (initdb first if needed) and wait until it takes connections."""
        if not self.initialized:
            self.init()
        for attempt in range(3):
            result = self._run(
                ["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
                 "-t", str(START_TIMEOUT), "start"],
                timeout=START_TIMEOUT + 30,
            )  # fmt: skip
            if result.returncode == 0:
                break
            # The free port may have been taken meanwhile: only a first start may move.
            if attempt < 2 and "could not bind" in self.log() and not self._ever_started:
                self.port = free_port()
                self._write_settings()
                continue
            raise PgError(
                f"pg_ctl start failed ({result.returncode}):\n{result.stderr}\n{self.log()}"
            )
        self._ever_started = True
        self._wait_for_connections()

    def _wait_for_connections(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        for _ in range(int(timeout / 0.1) + 1):
            try:
                query(self.url("postgres"), "SELECT 1")
                return
            except psycopg.Error as exc:
                last = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise PgError(
            f"PostgreSQL did not take connections within {timeout}s: {last}\n{self.log()}"
        )

    def running(self) -> bool:
        if not self.initialized:
            return False
        return self._run(["pg_ctl", "-D", str(self.data_dir), "status"], timeout=30).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`pg_ctl stop -m fast`, then immediate); no-op when not running."""
        if not self.initialized or not (self.data_dir / "postmaster.pid").exists():
            return
        result = self._run(
            ["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(STOP_TIMEOUT), "stop"],
            timeout=STOP_TIMEOUT + 30,
        )
        if result.returncode != 0 and self.running():
            result = self._run(
                ["pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t",
                 str(STOP_TIMEOUT), "stop"],
                timeout=STOP_TIMEOUT + 30,
            )  # fmt: skip
            if result.returncode != 0 and self.running():
                raise PgError(f"pg_ctl stop failed:\n{result.stderr}\n{self.log()}")
        deadline = time.monotonic() + 10
        while port_is_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def destroy(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        auth = PG_USER + (f":{password}" if password is not None else "")
        return f"postgres://{auth}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, label: str = "db") -> PgDatabase:
        """A new empty database, named after `label` and a counter."""
        name = f"t{next(_db_counter)}_{_sanitize(label)}"
        query(self.url("postgres"), f"CREATE DATABASE {quote_ident(name)}")
        return PgDatabase(self.url(name), name)

    def drop_database(self, db: PgDatabase) -> None:
        query(self.url("postgres"), f"DROP DATABASE IF EXISTS {quote_ident(db.name)} WITH (FORCE)")


class ExternalPg:
    """An existing server named by $FLOODWAY_TEST_POSTGRES_URL: databases only."""

    external = True

    def __init__(self, url: str) -> None:
        self.admin_url = url
        port = urlsplit(url).port
        self.port = port if port is not None else 5432

    def start(self) -> None:
        query(self.admin_url, "SELECT 1")

    def stop(self, mode: str = "fast") -> None:
        raise PgError(
            "an external PostgreSQL server ($FLOODWAY_TEST_POSTGRES_URL) cannot be stopped"
        )

    def ensure_running(self) -> None:
        pass

    def destroy(self) -> None:
        pass

    def log(self, tail: int = 4000) -> str:
        return ""

    def create_database(self, label: str = "db") -> PgDatabase:
        name = f"floodway_t{os.getpid()}_{next(_db_counter)}_{_sanitize(label)}"
        query(self.admin_url, f"CREATE DATABASE {quote_ident(name)}")
        return PgDatabase(url_with_database(self.admin_url, name), name)

    def drop_database(self, db: PgDatabase) -> None:
        query(self.admin_url, f"DROP DATABASE IF EXISTS {quote_ident(db.name)} WITH (FORCE)")


def make_cluster(settings: dict[str, str] | None = None) -> PgCluster | ExternalPg:
    """The server the tests use: $FLOODWAY_TEST_POSTGRES_URL, else a private cluster."""
    url = os.environ.get("FLOODWAY_TEST_POSTGRES_URL")
    if url:
        return ExternalPg(url)
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PgError(
            "no PostgreSQL server binaries (initdb, pg_ctl) found: install Debian's"
            " 'postgresql' package (scripts/test does), set FLOODWAY_TEST_PG_BIN to their"
            " folder, or set FLOODWAY_TEST_POSTGRES_URL to a server to use"
        )
    return PgCluster(bin_dir, settings)
