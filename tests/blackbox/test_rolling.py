"""SPEC §5, §7, §9: zero-downtime operations with several nodes behind a real nginx.

nginx runs deploy/nginx/floodway.conf (see nginx.py). Clients send numbered events through
it, each request with a unique Idempotency-Key and retried with the same key, while the
nodes are restarted one by one (rolling) or replaced by a new set (blue/green). Every
acknowledged event must then be in the Parquet output exactly once, and no request may
fail for good. The measured figures are printed (run pytest with -s to see them).
"""

from __future__ import annotations

import collections
import http.client
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import Server, committed_parquet_files, event, ndjson, read_files, wait_for
from nginx import Nginx, NginxError, example_fail_timeout

STREAM = "s"
RETRY_STATUSES = {409, 429, 502, 503, 504}
CLIENT_TIMEOUT = 10.0  # one attempt
CLIENT_DEADLINE = 30.0  # one request, all attempts


def node_config(target: Path, drain_timeout: str = "1s") -> dict[str, Any]:
    return {
        "server": {"drain_timeout": drain_timeout},
        "sinks": {"parquet": {"target": str(target), "max_age": "1s"}},
    }


@pytest.fixture
def make_nginx(tmp_path: Path) -> Iterator[Callable[[list[int]], Nginx]]:
    """Factory: make_nginx(node_ports) -> a running Nginx; all are stopped at teardown."""
    created: list[Nginx] = []

    def make(ports: list[int]) -> Nginx:
        try:
            proxy = Nginx(tmp_path / f"nginx{len(created)}", ports)
        except NginxError as exc:
            pytest.fail(str(exc), False)
        created.append(proxy)
        try:
            proxy.start()
        except NginxError as exc:
            pytest.fail(str(exc), False)
        return proxy

    yield make
    for proxy in created:
        proxy.stop()


class Load:
    """Client threads sending numbered events through `url`, retrying with the same key."""

    def __init__(self, url: str, threads: int = 4, batch: int = 20) -> None:
        self.url = url
        self.batch = batch
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.acked: list[int] = []
        self.key_ids: dict[str, list[int]] = {}
        self.failures: list[str] = []
        self.requests = 0
        self.attempts = 0
        self.replayed = 0
        self.retry_causes: collections.Counter[str] = collections.Counter()
        self.max_wait = 0.0
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_DEADLINE + 5)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not finish"

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _run(self, index: int) -> None:
        session = requests.Session()
        while not self.stopping.is_set():
            with self.lock:
                ids = [next(self.ids) for _ in range(self.batch)]
            key = f"c{index}-{uuid.uuid4().hex}"
            with self.lock:
                self.key_ids[key] = ids
            session = self._send(session, key, ids)
            time.sleep(0.005)
        session.close()

    def _send(self, session: requests.Session, key: str, ids: list[int]) -> requests.Session:
        body = ndjson([event(n) for n in ids])
        headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": key}
        started = time.monotonic()
        attempt = 0
        last = ""
        while True:
            attempt += 1
            with self.lock:
                self.attempts += 1
            pause = min(0.05 * 2 ** (attempt - 1), 0.5)
            try:
                resp = session.post(self.url, data=body, headers=headers, timeout=CLIENT_TIMEOUT)
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
                cause = type(exc).__name__
                session.close()
                session = requests.Session()
            else:
                if resp.status_code == 200:
                    accepted = resp.json().get("accepted")
                    with self.lock:
                        self.requests += 1
                        self.max_wait = max(self.max_wait, time.monotonic() - started)
                        if resp.headers.get("Idempotent-Replayed") == "true":
                            self.replayed += 1
                        if accepted == len(ids):
                            self.acked.extend(ids)
                        else:
                            self.failures.append(f"{key}: 200 with {resp.text[:300]}")
                    return session
                last = f"{resp.status_code} {resp.text[:200]}"
                cause = str(resp.status_code)
                if resp.status_code not in RETRY_STATUSES:
                    with self.lock:
                        self.failures.append(f"{key}: {last}")
                    return session
                retry_after = resp.headers.get("Retry-After")
                if retry_after and retry_after.isdigit():
                    pause = min(float(retry_after), 2.0)
            with self.lock:
                self.retry_causes[cause] += 1
            if time.monotonic() - started + pause > CLIENT_DEADLINE:
                with self.lock:
                    self.failures.append(f"{key}: gave up after {attempt} attempts, last {last}")
                return session
            time.sleep(pause)


def wait_delivered(nodes: list[Server]) -> int:
    """Wait until each node's Parquet output holds all it accepted; the sum of `accepted`."""
    total = 0
    for node in nodes:
        last: dict[str, Any] = {}

        def caught_up(node: Server = node) -> Any:
            info = node.stream_info(STREAM)
            last.update(accepted=info["accepted"], delivered=info["delivered"])
            return info if info["delivered"]["parquet"] == info["accepted"] else None

        try:
            info = wait_for(caught_up, timeout=20, interval=0.1, what=f"node {node.port} delivered")
        except AssertionError as error:
            raise AssertionError(f"node {node.port} never caught up: {last}") from error
        total += info["accepted"]
    return total


def check_exactly_once(
    load: Load, roots: list[Path], proxy: Nginx, nodes: list[Server]
) -> list[int]:
    """Every acknowledged id once in the committed Parquet files; none failed for good."""
    assert not load.failures, f"{len(load.failures)} requests failed for good: {load.failures[:5]}"
    files = [f for root in roots for f in committed_parquet_files(root / STREAM)]
    stored = [row["n"] for row in read_files(files)]
    counts = collections.Counter(stored)
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    if duplicates:
        keys = {k for k, ids in load.key_ids.items() if set(ids) & set(duplicates)}
        evidence = [line for line in proxy.access_lines() if any(k in line for k in keys)]
        where = collections.defaultdict(list)
        for path in files:
            for row in read_files([path]):
                if row["n"] in duplicates[:5]:
                    where[row["n"]].append(path.name)
        pytest.fail(
            f"{len(duplicates)} ids stored more than once, e.g. {duplicates[:10]}; files: "
            f"{dict(where)}; nginx access log for their requests:\n" + "\n".join(evidence[:20]),
            False,
        )
    missing = sorted(set(load.acked) - set(counts))
    assert not missing, f"{len(missing)} acknowledged ids missing, e.g. {missing[:10]}"
    assert len(load.acked) == len(set(load.acked)), "an id was acknowledged twice"
    return stored


def report(name: str, **figures: Any) -> None:
    print(f"\n[{name}] " + json.dumps(figures, sort_keys=True))


SHARED = pytest.mark.parametrize(
    "shared_target", [True, False], ids=["shared-target", "target-per-node"]
)


def targets(tmp_path: Path, shared: bool, count: int, first: int = 0) -> list[Path]:
    """The nodes' Parquet targets: one folder for all (as SPEC §9 allows), or one each."""
    root = tmp_path / "parquet"
    return [root if shared else root / f"node{first + i}" for i in range(count)]


@SHARED
def test_rolling_restart_under_load_loses_nothing(
    make_server: Callable[..., Server],
    make_nginx: Callable[[list[int]], Nginx],
    tmp_path: Path,
    shared_target: bool,
) -> None:
    roots = targets(tmp_path, shared_target, 2)
    nodes = [make_server(node_config(root)) for root in roots]
    for node in nodes:
        node.create_stream(STREAM)
    proxy = make_nginx([node.port for node in nodes])
    fail_timeout = example_fail_timeout()

    load = Load(proxy.url(f"/v1/streams/{STREAM}/events")).start()
    try:
        wait_for(lambda: load.acked_count() >= 200, timeout=10, what="traffic through nginx")
        started = time.monotonic()
        steps = []
        for _ in range(2):
            for node in nodes:
                step = time.monotonic()
                node.stop()  # SIGTERM, drain, exit 0
                node.restart()  # same port, same data dir: waits for /readyz 200
                steps.append(round(time.monotonic() - step, 3))
                # nginx may have marked the node failed; it tries it again after fail_timeout.
                time.sleep(fail_timeout)
        upgrade_time = time.monotonic() - started
        before = load.acked_count()
        wait_for(lambda: load.acked_count() > before + 100, timeout=10, what="traffic after")
    finally:
        load.stop()

    accepted = wait_delivered(nodes)
    stored = check_exactly_once(load, sorted(set(roots)), proxy, nodes)
    assert accepted == len(load.acked), (accepted, len(load.acked))
    passed_on = sum(1 for line in proxy.access_lines() if "upstream_status=503, 200" in line)
    report(
        f"rolling {'shared target' if shared_target else 'target per node'}",
        nodes=len(nodes),
        restarts=len(steps),
        total_upgrade_s=round(upgrade_time, 3),
        per_node_stop_start_s=steps,
        longest_client_wait_s=round(load.max_wait, 3),
        events=len(stored),
        requests=load.requests,
        attempts=load.attempts,
        client_retries=dict(load.retry_causes),
        replayed=load.replayed,
        nginx_passed_on_503=passed_on,
    )
    assert load.max_wait < 10, f"a client waited {load.max_wait:.2f}s for an answer"
    assert upgrade_time < 60, upgrade_time


@SHARED
def test_blue_green_switch_under_load(
    make_server: Callable[..., Server],
    make_nginx: Callable[[list[int]], Nginx],
    tmp_path: Path,
    shared_target: bool,
) -> None:
    roots = targets(tmp_path, shared_target, 4)
    blue = [make_server(node_config(root)) for root in roots[:2]]
    for node in blue:
        node.create_stream(STREAM)
    proxy = make_nginx([node.port for node in blue])

    load = Load(proxy.url(f"/v1/streams/{STREAM}/events")).start()
    try:
        wait_for(lambda: load.acked_count() >= 200, timeout=10, what="traffic through nginx")
        started = time.monotonic()
        green = [make_server(node_config(root)) for root in roots[2:]]
        for node in green:
            node.create_stream(STREAM)
        proxy.reload([node.port for node in green])
        switched = time.monotonic() - started
        for node in blue:
            node.http.close()
            node.terminate()
        for node in blue:
            code = node.wait_exit()
            assert code == 0, f"blue node exited with {code}\n{node.log()}"
        switch_time = time.monotonic() - started
        before = load.acked_count()
        wait_for(lambda: load.acked_count() > before + 100, timeout=10, what="traffic on green")
    finally:
        load.stop()

    green_accepted = wait_delivered(green)
    stored = check_exactly_once(load, sorted(set(roots)), proxy, blue + green)
    assert green_accepted > 0, "green took no traffic"
    report(
        f"blue/green {'shared target' if shared_target else 'target per node'}",
        total_switch_s=round(switch_time, 3),
        reload_s=round(switched, 3),
        longest_client_wait_s=round(load.max_wait, 3),
        events=len(stored),
        events_on_green=green_accepted,
        requests=load.requests,
        attempts=load.attempts,
        client_retries=dict(load.retry_causes),
        replayed=load.replayed,
    )
    assert load.max_wait < 10, f"a client waited {load.max_wait:.2f}s for an answer"


def test_readyz_turns_503_within_100ms_of_sigterm_while_in_flight_request_completes(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(
        {"server": {"drain_timeout": "2s"}, "sinks": {"parquet": {"max_age": "1h"}}}
    )
    server.create_stream(STREAM)
    body = ndjson([event(n) for n in range(1, 3001)])
    half = len(body) // 2

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("POST", f"/v1/streams/{STREAM}/events")
        conn.putheader("Content-Type", "application/x-ndjson")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Idempotency-Key", "in-flight-1")
        conn.endheaders()
        conn.send(body[:half])
        time.sleep(0.3)  # the request is in flight: headers taken, body half received

        signalled = time.monotonic()
        server.terminate()
        reaction = None
        polls = 0
        for _ in range(200):
            polls += 1
            try:
                resp = requests.get(server.url("/readyz"), timeout=1)
                if resp.status_code == 503:
                    reaction = time.monotonic() - signalled
                    assert resp.json()["status"] == "not_ready", resp.text
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - signalled > 2:
                break
            time.sleep(0.005)
        assert reaction is not None, "/readyz did not turn 503 within 2s of SIGTERM"

        # Only now send the rest of the body, slowly: the request is still in flight.
        rest = body[half:]
        chunk = max(1, len(rest) // 5)
        for i in range(0, len(rest), chunk):
            conn.send(rest[i : i + chunk])
            time.sleep(0.05)
        answer = conn.getresponse()
        text = answer.read().decode()
        answered = time.monotonic() - signalled
    finally:
        conn.close()
    assert answer.status == 200, text
    assert json.loads(text)["accepted"] == 3000, text
    code = server.wait_exit(30)
    assert code == 0, server.log()
    assert sorted(row["n"] for row in server.rows(STREAM)) == list(range(1, 3001))
    report(
        "readyz",
        readyz_503_after_sigterm_ms=round(reaction * 1000, 1),
        readyz_polls=polls,
        in_flight_answered_after_sigterm_s=round(answered, 3),
    )
    assert reaction <= 0.5, f"/readyz turned 503 only {reaction * 1000:.0f} ms after SIGTERM"
