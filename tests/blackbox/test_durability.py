"""Durability (SPEC §4, §5): a 200 survives kill -9, every event lands exactly once, the WAL
repairs torn and garbled tails, and Idempotency-Key makes a retry land once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Server, crash_loop, event, ndjson

# Files commit often and split often, so kills land in every phase of a commit.
CHURN = {"sinks": {"parquet": {"max_age": "200ms", "max_rows": 37}}}


def wal_segments(server: Server) -> list[Path]:
    return sorted((server.data_dir / "wal").glob("*.wal"))


def test_kill9_loses_no_acknowledged_event(make_server: Callable[..., Server]) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("s")
    server.ingest("s", [event(i) for i in range(10)])
    server.ingest("s", [event(i) for i in range(10, 15)])
    assert server.parquet_files("s") == [], "nothing is committed before max_age"
    server.kill()
    server.restart()
    # Counters are kept across restarts, a crash included.
    assert server.stream_info("s")["accepted"] == 15
    server.ingest("s", [event(15)])
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == list(range(16))


def test_crash_loop_keeps_every_acknowledged_event_exactly_once(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(CHURN)
    server.create_stream("s")

    def two_hours(ids: list[int]) -> list[dict[str, Any]]:
        # Spread over two hours so a batch splits across files.
        return [event(i, ts=f"2024-05-01T1{i % 2}:00:00Z") for i in ids]

    acknowledged, sent, kills = crash_loop(
        server, "s", two_hours, seed=20241125, max_kills=22, wait=(0.05, 0.6)
    )
    server.stop()

    assert kills >= 20
    counts = Counter(r["n"] for r in server.rows("s"))
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not twice, f"events written more than once: {twice[:20]}"
    missing = sorted(acknowledged - counts.keys())
    assert not missing, f"{len(missing)} acknowledged events are missing: {missing[:20]}"
    assert counts.keys() <= sent
    assert len(acknowledged) > 500, "the loop acknowledged too little to mean anything"


def test_counters_survive_a_crash_exactly(make_server: Callable[..., Server]) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("lines")
    server.create_stream(
        "strict",
        {
            "fields": [{"name": "ts", "type": "timestamp"}, {"name": "n", "type": "int64"}],
            "time_field": "ts",
            "on_invalid": "reject_request",
        },
    )
    server.create_stream(
        "letters",
        {
            "fields": [{"name": "ts", "type": "timestamp"}, {"name": "n", "type": "int64"}],
            "time_field": "ts",
            "on_invalid": "dead_letter",
        },
    )
    bad = {"ts": "nope", "n": 0}
    assert server.post_events("lines", ndjson([event(1), event(2), bad])).status_code == 200
    assert server.post_events("strict", ndjson([event(1), bad, bad])).status_code == 422
    assert server.post_events("letters", ndjson([event(1), bad])).status_code == 200
    before = {s: server.stream_info(s) for s in ("lines", "strict", "letters")}
    server.kill()
    server.restart()
    for stream, info in before.items():
        after = server.stream_info(stream)
        for counter in ("accepted", "rejected", "dead_lettered"):
            assert after[counter] == info[counter], (stream, counter, info, after)
    assert before["lines"]["accepted"] == 2 and before["lines"]["rejected"] == 1
    assert before["strict"]["accepted"] == 0 and before["strict"]["rejected"] == 2
    assert before["letters"]["accepted"] == 1 and before["letters"]["dead_lettered"] == 1


def test_torn_wal_tail_is_cut_and_acknowledged_events_kept(
    make_server: Callable[..., Server],
) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("s")
    server.ingest("s", [event(i) for i in range(5)])
    server.kill()
    segment = wal_segments(server)[-1]
    # An append torn mid-write: half a header of a record that was never answered.
    with open(segment, "ab") as file:
        file.write(b"\x40\x00\x00\x00\x12\x34")
    server.restart()
    server.ingest("s", [event(5)])
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == list(range(6))
    assert "torn or damaged tail" in server.log(tail=100_000)


def test_garbled_wal_record_at_the_tail_is_dropped_and_logged(
    make_server: Callable[..., Server],
) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("s")
    server.ingest("s", [event(i) for i in range(3)])
    server.kill()
    segment = wal_segments(server)[-1]
    size = segment.stat().st_size
    # Garbage the size of a record after the last one: a write that never completed.
    with open(segment, "ab") as file:
        file.write(bytes([0x10, 0, 0, 0]) + bytes(range(28)))
    server.restart()
    assert segment.stat().st_size == size, "the garbage was not cut off"
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == [0, 1, 2]
    assert "checksum mismatch" in server.log(tail=100_000) or "incomplete" in server.log(tail=100_000)


def test_damaged_wal_before_the_tail_refuses_to_start(make_server: Callable[..., Server]) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("s")
    for i in range(3):
        server.ingest("s", [event(i)])
    server.kill()
    segment = wal_segments(server)[-1]
    data = bytearray(segment.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload: acknowledged records follow
    segment.write_bytes(bytes(data))
    server.spawn()
    assert server.wait_exit(timeout=20) != 0
    assert "corrupt" in server.log()


def test_idempotency_key_replays_the_first_answer_before_and_after_restart(
    make_server: Callable[..., Server],
) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("s")
    body = ndjson([event(1), event(2), {"ts": "bad", "n": 3}])
    headers = {"Idempotency-Key": "order-42"}
    first = server.post_events("s", body, headers=headers)
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    again = server.post_events("s", body, headers=headers)
    assert again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    # The same key on another stream is another request.
    server.create_stream("t")
    other = server.post_events("t", body, headers=headers)
    assert "Idempotent-Replayed" not in other.headers
    server.kill()
    server.restart()
    after_crash = server.post_events("s", body, headers=headers)
    assert after_crash.headers.get("Idempotent-Replayed") == "true"
    assert after_crash.json() == first.json()
    server.stop()
    server.restart()
    after_stop = server.post_events("s", body, headers=headers)
    assert after_stop.headers.get("Idempotent-Replayed") == "true"
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == [1, 2]


def test_bad_idempotency_keys_are_400(server: Server) -> None:
    server.create_stream("s")
    for key in ["", "x" * 129, "has space"]:
        resp = server.post_events("s", ndjson([event(1)]), headers={"Idempotency-Key": key})
        assert resp.status_code == 400, (key, resp.status_code)
        assert resp.json()["error"] == "invalid_idempotency_key"
    ok = server.post_events("s", ndjson([event(1)]), headers={"Idempotency-Key": "x" * 128})
    assert ok.status_code == 200


def test_sigterm_leaves_no_wal_backlog_for_committed_data(
    make_server: Callable[..., Server],
) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("s")
    server.ingest("s", [event(i) for i in range(50)])
    server.stop()
    state = json.loads((server.data_dir / "sinks" / "parquet.json").read_text())
    assert state["checkpoint"] >= 1, state
    assert state["pending"] == [], state
    server.restart()
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == list(range(50))
