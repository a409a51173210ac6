"""Harness for the black-box tests: runs a real `floodway serve` process and talks to it.

Every server listens on 127.0.0.1 only, on a free port picked at start. Every wait is a
bounded poll (count and time), and every process is killed at teardown, whatever happens.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every test server gets these unless the test overrides them: no drain wait on SIGTERM,
# and Parquet files committed one second after their first event.
DEFAULT_CONFIG: dict[str, Any] = {
    "server": {"drain_timeout": "0s"},
    "sinks": {"parquet": {"max_age": "1s"}},
}

REQUEST_TIMEOUT = 15.0
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0

# A stream schema used by many tests: the time field plus a few simple columns.
SIMPLE_SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "ts", "type": "timestamp"},
        {"name": "n", "type": "int64"},
        {"name": "msg", "type": "string", "nullable": True},
    ],
    "time_field": "ts",
}

TS = "2024-05-01T12:00:00Z"


def floodway_bin() -> Path:
    """The binary under test: $FLOODWAY_BIN, else the debug build of this repository."""
    value = os.environ.get("FLOODWAY_BIN")
    return Path(value) if value else REPO_ROOT / "target" / "debug" / "floodway"


def free_port() -> int:
    """A loopback port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    attempts = max(1, int(timeout / interval) + 1)
    last: Any = None
    for _ in range(attempts):
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}"
    )


# ---------------------------------------------------------------------------------------
# TOML


def deep_merge(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`base` with `overrides` merged in, recursively; an override of None removes the key."""
    out = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(config: dict[str, Any]) -> str:
    """Render nested dicts (tables) and lists of dicts (arrays of tables) as TOML text."""
    lines: list[str] = []

    def render(table: dict[str, Any], prefix: str) -> None:
        scalars = {
            k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)
        }
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        if scalars:
            lines.append("")
        for key, value in table.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                render(value, name)
            elif _is_table_array(value):
                for item in value:
                    lines.append(f"[[{name}]]")
                    for k, v in item.items():
                        lines.append(f"{k} = {_toml_value(v)}")
                    lines.append("")

    render(config, "")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Bodies


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def event(n: int = 1, ts: str = TS, **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "n": n, **extra}


# ---------------------------------------------------------------------------------------
# Parquet reading


def is_hidden(path: Path) -> bool:
    return path.name.startswith(("_", "."))


def committed_parquet_files(root: Path) -> list[Path]:
    """Committed Parquet files under `root`: no in-progress (`_`/`.`) names anywhere on the path."""
    if not root.exists():
        return []
    out = []
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root)
        if not any(part.startswith(("_", ".")) for part in rel.parts):
            out.append(path)
    return out


def normalize_column(column: pa.ChunkedArray) -> list[Any]:
    """Python values of a column, with timestamps as integer microseconds and UUIDs as bytes."""
    typ = column.type
    if isinstance(typ, pa.BaseExtensionType):
        column = pa.chunked_array([c.storage for c in column.chunks], type=typ.storage_type)
        typ = column.type
    if pa.types.is_timestamp(typ):
        column = column.cast(pa.int64())
    if pa.types.is_dictionary(typ):
        column = column.cast(typ.value_type)
    values = column.to_pylist()
    return [v.bytes if isinstance(v, uuid.UUID) else v for v in values]


def read_files(files: list[Path]) -> list[dict[str, Any]]:
    """All rows of `files` as dicts of normalized values (see normalize_column)."""
    rows: list[dict[str, Any]] = []
    for path in files:
        table = pq.ParquetFile(path).read()
        columns = {name: normalize_column(table.column(name)) for name in table.column_names}
        for i in range(table.num_rows):
            rows.append({name: values[i] for name, values in columns.items()})
    return rows


# ---------------------------------------------------------------------------------------
# Server


class Server:
    """One `floodway serve` process with its own config file, data dir and loopback port."""

    def __init__(
        self,
        root: Path,
        config: dict[str, Any] | None = None,
        *,
        write_config: bool = True,
        bind_flag: bool = True,
        data_dir_flag: bool = True,
        env: dict[str, str] | None = None,
        port: int | None = None,
        data_dir: Path | None = None,
        config_path: Path | None = None,
        extra_args: list[str] | None = None,
        cwd: Path | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.data_dir = data_dir if data_dir is not None else self.root / "data"
        self.config = deep_merge(DEFAULT_CONFIG, config)
        self.config_path: Path | None = None
        if write_config:
            self.config_path = config_path or self.root / "floodway.toml"
            self.config_path.parent.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(to_toml(self.config))
        self.bind_flag = bind_flag
        self.data_dir_flag = data_dir_flag
        self.extra_env = dict(env or {})
        self.extra_args = list(extra_args or [])
        self.cwd = cwd or self.root
        # Set for a server with server.tls_cert: HTTPS, trusting this CA.
        self.tls_ca = tls_ca
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.http = requests.Session()
        self._out: Path | None = None
        self._err: Path | None = None

    # -- process ---------------------------------------------------------------------

    def argv(self) -> list[str]:
        args = [str(floodway_bin()), "serve"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        if self.bind_flag:
            args += ["--bind", f"127.0.0.1:{self.port}"]
        if self.data_dir_flag:
            args += ["--data-dir", str(self.data_dir)]
        return args + self.extra_args

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODWAY_")}
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        return env

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        self._out = self.root / f"server-{self.starts}.stdout"
        self._err = self.root / f"server-{self.starts}.stderr"
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=self.environ(),
            )
        self.http.close()
        self.http = requests.Session()

    def start(self, timeout: float = READY_TIMEOUT) -> Server:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        for _ in range(int(timeout / 0.02) + 1):
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(
                    f"floodway exited with {code} before it was ready\n{self.log()}"
                )
            try:
                verify: bool | str = str(self.tls_ca) if self.tls_ca is not None else True
                resp = requests.get(self.url("/readyz"), timeout=1.0, verify=verify)
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text[:200]}"
            except requests.RequestException as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"floodway not ready after {timeout}s ({last})\n{self.log()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM without waiting."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"floodway did not exit within {timeout}s\n{self.log()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait, and require exit code 0."""
        self.http.close()
        if not self.running():
            code = self.proc.returncode if self.proc else None
            raise AssertionError(f"floodway was not running (exit code {code})\n{self.log()}")
        self.terminate()
        code = self.wait_exit(timeout)
        assert code == 0, f"floodway exited with {code} after SIGTERM\n{self.log()}"

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def restart(self, timeout: float = READY_TIMEOUT) -> Server:
        """Start again with the same config, data dir and port (after stop() or kill())."""
        assert not self.running(), "restart() needs a stopped server"
        return self.start(timeout)

    def log(self, tail: int = 8000) -> str:
        parts = []
        for label, path in (("stdout", self._out), ("stderr", self._err)):
            if path is not None and path.exists():
                text = path.read_bytes().decode(errors="replace")
                parts.append(f"--- floodway {label} ({path.name}) ---\n{text[-tail:]}")
        return "\n".join(parts)

    # -- HTTP ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        scheme = "https" if self.tls_ca is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        if self.tls_ca is not None:
            # Per request: REQUESTS_CA_BUNDLE in the environment would beat the session's.
            kwargs.setdefault("verify", str(self.tls_ca))
        return self.http.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def put_stream(self, name: str, schema: dict[str, Any] | str | bytes) -> requests.Response:
        if isinstance(schema, dict):
            data = json.dumps(schema).encode()
        elif isinstance(schema, str):
            data = schema.encode()
        else:
            data = schema
        return self.request(
            "PUT", f"/v1/streams/{name}", data=data, headers={"Content-Type": "application/json"}
        )

    def create_stream(self, name: str, schema: dict[str, Any] | None = None) -> None:
        resp = self.put_stream(name, schema if schema is not None else SIMPLE_SCHEMA)
        assert resp.status_code in (200, 201), f"PUT {name}: {resp.status_code} {resp.text}"

    def post_events(
        self,
        stream: str,
        body: bytes | str,
        content_type: str | None = "application/x-ndjson",
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> requests.Response:
        hdrs = {}
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        data = body.encode() if isinstance(body, str) else body
        return self.request(
            "POST", f"/v1/streams/{stream}/events", data=data, headers=hdrs, timeout=timeout
        )

    def ingest(self, stream: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """POST events as NDJSON and require that every one was accepted."""
        resp = self.post_events(stream, ndjson(events))
        assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
        body = resp.json()
        assert body["accepted"] == len(events), body
        return body

    def stream_info(self, name: str) -> dict[str, Any]:
        resp = self.get(f"/v1/streams/{name}")
        assert resp.status_code == 200, f"GET stream {name}: {resp.status_code} {resp.text}"
        return resp.json()

    # -- outputs ---------------------------------------------------------------------

    @property
    def parquet_root(self) -> Path:
        return self.data_dir / "parquet"

    def stream_dir(self, stream: str) -> Path:
        return self.parquet_root / stream

    def parquet_files(self, stream: str) -> list[Path]:
        return committed_parquet_files(self.stream_dir(stream))

    def rows(self, stream: str) -> list[dict[str, Any]]:
        return read_files(self.parquet_files(stream))

    def dead_letter_files(self, stream: str) -> list[Path]:
        root = self.parquet_root / "_dead_letter" / stream
        if not root.exists():
            return []
        return sorted(p for p in root.glob("date=*/*.ndjson") if not is_hidden(p))

    def dead_letters(self, stream: str) -> list[dict[str, Any]]:
        records = []
        for path in self.dead_letter_files(stream):
            for line in path.read_text().splitlines():
                if line.strip():
                    records.append(json.loads(line))
        return records


def run_cli(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `floodway ARGS` to completion (no stdin) and return the result."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODWAY_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(floodway_bin()), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------
# Sinks: health, and load while they fail or the server is killed


def readyz(server: Server) -> tuple[int, dict[str, Any]]:
    """GET /readyz: the status code and the JSON body."""
    resp = server.get("/readyz", timeout=5)
    return resp.status_code, resp.json()


def sink_status(server: Server, sink: str) -> str | None:
    """`sinks.{sink}` in /readyz ("ok", "degraded", ...), or None without an answer."""
    try:
        return readyz(server)[1].get("sinks", {}).get(sink)
    except (requests.RequestException, ValueError):
        return None


def wait_sink_status(server: Server, sink: str, status: str, timeout: float) -> None:
    """Wait until /readyz shows `sinks.{sink}` == `status`; fail after `timeout` seconds."""
    wait_for(
        lambda: sink_status(server, sink) == status,
        timeout=timeout,
        interval=0.1,
        what=f"/readyz sinks.{sink} == {status!r} (now {sink_status(server, sink)!r})",
    )


def wait_all_delivered(server: Server, stream: str, sink: str, timeout: float) -> None:
    """Wait until stream info counts every event accepted on `stream` as delivered by `sink`."""
    wait_for(
        lambda: (i := server.stream_info(stream))["delivered"][sink] == i["accepted"] and i,
        timeout=timeout,
        interval=0.2,
        what=f"delivered.{sink} == accepted",
    )


class BatchSender:
    """Posts batches of new ids to one stream, a request a call, and keeps count: the ids
    acknowledged with a 200 (`acknowledged`) and the answers by status code (`codes`)."""

    def __init__(
        self,
        server: Server,
        stream: str,
        make_events: Callable[[list[int]], list[dict[str, Any]]],
    ) -> None:
        self.server = server
        self.stream = stream
        self.make_events = make_events
        self.acknowledged: set[int] = set()
        self.codes: Counter[int] = Counter()
        self.next_id = 0

    def __call__(self, count: int = 50) -> None:
        batch = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        resp = self.server.post_events(self.stream, ndjson(self.make_events(batch)))
        self.codes[resp.status_code] += 1
        if resp.status_code == 200:
            assert resp.json()["accepted"] == count, resp.text
            self.acknowledged.update(batch)


def send_until_degraded(
    server: Server, sink: str, send: Callable[[], None], timeout: float
) -> tuple[int, dict[str, Any]]:
    """Call `send()` every 50 ms until /readyz shows `sinks.{sink}` "degraded" and return
    that answer (status code, body); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        send()
        status = readyz(server)
        if status[1]["sinks"].get(sink) == "degraded":
            return status
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"{sink} never showed degraded\n{server.log()}")


def keep_sending(send: Callable[[], None], seconds: float, interval: float = 0.02) -> None:
    """Call `send()` every `interval` seconds for `seconds` seconds."""
    until = time.monotonic() + seconds
    for _ in range(int(seconds / interval) + 1):
        send()
        if time.monotonic() >= until:
            break
        time.sleep(interval)


def crash_loop(
    server: Server,
    stream: str,
    make_events: Callable[[list[int]], list[dict[str, Any]]],
    *,
    seed: int,
    max_kills: int,
    wait: tuple[float, float],
    time_limit: float | None = None,
    clients: int = 4,
    batch: int = 20,
) -> tuple[set[int], set[int], int]:
    """Kill -9 in a loop while clients ingest: `clients` threads post batches of `batch`
    new ids (the events `make_events(ids)`) while the server is killed at a random moment,
    `random.Random(seed).uniform(*wait)` seconds after each start, and restarted; up to
    `max_kills` times, or until `time_limit` seconds have passed (None: no limit).

    Returns (ids acknowledged with a 200, ids sent, kills). The server is running again
    when it returns.
    """
    acknowledged: set[int] = set()
    sent: set[int] = set()
    lock = threading.Lock()
    next_id = [0]
    rng = random.Random(seed)

    def client(stop: threading.Event) -> None:
        session = requests.Session()
        for _ in range(10_000):
            if stop.is_set():
                return
            with lock:
                first = next_id[0]
                next_id[0] += batch
            ids = list(range(first, first + batch))
            with lock:
                sent.update(ids)
            try:
                resp = session.post(
                    server.url(f"/v1/streams/{stream}/events"),
                    data=ndjson(make_events(ids)),
                    headers={"Content-Type": "application/x-ndjson"},
                    timeout=5,
                )
            except requests.RequestException:
                continue
            if resp.status_code == 200:
                assert resp.json()["accepted"] == batch, resp.text
                with lock:
                    acknowledged.update(ids)

    kills = 0
    started = time.monotonic()
    for _ in range(max_kills):
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(stop,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        threading.Event().wait(rng.uniform(*wait))
        server.kill()
        kills += 1
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.restart()
        if time_limit is not None and time.monotonic() - started > time_limit:
            break
    return acknowledged, sent, kills
