"""Storage limits (SPEC §4, §5): a full disk answers 507 and heals by itself; a sink that
cannot write holds events in the WAL until wal.max_bytes, then ingestion answers 503."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import Server, committed_parquet_files, event, ndjson, read_files, wait_for

FILLER_CHUNK = b"\0" * (64 * 1024)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, so the test can run the data dir out of space (needs root)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Writes zeros to `path` until the filesystem is full."""
    with open(path, "wb") as file:
        for _ in range(10_000):
            try:
                file.write(FILLER_CHUNK)
                file.flush()
                os.fsync(file.fileno())
            except OSError:
                return
    raise AssertionError("the small disk never filled up")


def test_disk_full_answers_507_keeps_acknowledged_events_and_heals(
    make_server: Callable[..., Server], small_disk: Path
) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "200ms"}}}, data_dir=small_disk / "data")
    server.create_stream("s")
    acknowledged: set[int] = set()
    next_id = 0

    def send(count: int) -> int:
        nonlocal next_id
        ids = list(range(next_id, next_id + count))
        next_id += count
        resp = server.post_events("s", ndjson([event(i, msg="x" * 200) for i in ids]))
        if resp.status_code == 200:
            acknowledged.update(ids)
        return resp.status_code

    for _ in range(5):
        assert send(50) == 200
    filler = small_disk / "filler"
    fill(filler)
    codes = [send(50) for _ in range(40)]
    full = [c for c in codes if c in (503, 507)]
    assert full, f"no 503/507 with the disk full: {Counter(codes)}"
    assert set(codes) <= {200, 503, 507}, Counter(codes)
    assert server.get("/healthz").status_code == 200

    filler.unlink()
    # Ingestion resumes by itself once space returns.
    wait_for(lambda: send(10) == 200, timeout=20, interval=0.2, what="ingestion to resume")
    for _ in range(5):
        assert send(50) == 200
    wait_for(lambda: server.get("/readyz").json()["sinks"]["parquet"] == "ok", timeout=20, what="sink ok")
    server.stop()
    counts = Counter(r["n"] for r in server.rows("s"))
    assert not [n for n, c in counts.items() if c > 1], "events written twice"
    missing = sorted(acknowledged - counts.keys())
    assert not missing, f"acknowledged events lost: {missing[:20]}"


def test_stuck_sink_fills_the_wal_then_503_and_recovers(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the sink needs a folder")
    server = make_server(
        {
            "wal": {"max_bytes": 1_048_576},
            "sinks": {"parquet": {"target": str(blocked / "parquet"), "max_age": "100ms"}},
        }
    )
    server.create_stream("s")
    server.ingest("s", [event(-1)])
    # A degraded sink alone does not make the node unready (SPEC §7).
    ready = wait_for(
        lambda: (r := server.get("/readyz")).json()["sinks"]["parquet"] == "degraded" and r,
        timeout=10,
        what="the sink to report degraded",
    )
    assert ready.status_code == 200, ready.text
    acknowledged: set[int] = {-1}
    codes: list[int] = []
    for batch in range(400):
        ids = list(range(batch * 100, batch * 100 + 100))
        # Random text, so the WAL's compression cannot shrink it away.
        resp = server.post_events("s", ndjson([event(i, msg=os.urandom(60).hex()) for i in ids]))
        codes.append(resp.status_code)
        if resp.status_code == 200:
            acknowledged.update(ids)
        else:
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "wal_full"
            assert "Retry-After" in resp.headers
            break
    assert codes[-1] == 503, f"the WAL never filled: {Counter(codes)}"
    assert len(acknowledged) > 100, "ingestion stopped before the WAL was used"
    # With the WAL full the node cannot take events: load balancers should move away.
    ready = server.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert "WAL is full" in ready.json()["reason"], ready.text

    blocked.unlink()  # the sink can write again: it catches up and the WAL drains
    wait_for(
        lambda: server.post_events("s", ndjson([event(10_000_000)])).status_code == 200,
        timeout=30,
        interval=0.2,
        what="ingestion to resume",
    )
    acknowledged.add(10_000_000)
    server.stop()
    rows = [r["n"] for r in read_files(committed_parquet_files(blocked / "parquet" / "s"))]
    assert not [n for n, c in Counter(rows).items() if c > 1], "events written twice"
    assert acknowledged <= set(rows)
