"""SPEC §2, §5, §6, §7, §9: the Parquet sink writing to an S3-compatible object store.

Each test runs a real s3s-fs (fixture `s3_server`, see s3.py) and points a real
`floodway serve` at it with `target = "s3://BUCKET/PREFIX"` and `[sinks.parquet.s3]`.
What arrived is read back through the S3 API with pyarrow's S3 filesystem, never from
floodway's data dir: the bucket is what a reader of the dataset sees.

The layout in the bucket is the local one under the prefix:
`{PREFIX}/{stream}/date=YYYY-MM-DD/hour=HH/part-{node_id}-{lsn:020}-{row:06}.parquet` and
`{PREFIX}/_dead_letter/{stream}/date=YYYY-MM-DD/dl-{node_id}-{lsn:020}.ndjson`. Files in
progress are staged in the data dir, so no object name in the bucket may start with `_`
or `.`, and an object appears whole or not at all (one PUT, or a multipart upload
completed once every part is in).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from harness import (
    READY_TIMEOUT,
    SIMPLE_SCHEMA,
    BatchSender,
    Server,
    crash_loop,
    deep_merge,
    free_port,
    keep_sending,
    ndjson,
    port_is_open,
    readyz,
    run_cli,
    send_until_degraded,
    sink_status,
    to_toml,
    wait_all_delivered,
    wait_for,
    wait_sink_status,
)
from s3 import BUCKET, REGION, S3Server, is_hidden_key
from test_durability import CHURN
from test_parquet import ALL_TYPES_SCHEMA

UTC = dt.UTC

PREFIX = "telemetry/eu-west/v1"  # several segments
DELIVERY_TIMEOUT = 60.0  # seconds for events to show up in the bucket (backoff caps at 5 s)
# test_durability's churn (a commit every 200 ms) with files of up to 250 rows instead of 37:
# each object costs a few requests to read back through S3, so thousands would be slow.
S3_CHURN = deep_merge(CHURN, {"sinks": {"parquet": {"max_rows": 250}}})


# ---------------------------------------------------------------------------------------
# Helpers


def s3_sink(
    s3: S3Server,
    *,
    bucket: str = BUCKET,
    prefix: str = PREFIX,
    parquet: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Config overrides sending Parquet to `s3://{bucket}/{prefix}` on the test server."""
    target = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    s3_table = {
        "endpoint": s3.endpoint,
        "region": REGION,
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
        "path_style": True,
        "allow_http": True,
        **settings,
    }
    return {"sinks": {"parquet": {"target": target, **(parquet or {}), "s3": s3_table}}}


def node(node_id: str) -> dict[str, Any]:
    return {"server": {"node_id": node_id}}


def delivered(server: Server, stream: str) -> int:
    return int(server.stream_info(stream)["delivered"]["parquet"])


def wait_delivered(
    server: Server, stream: str, count: int, timeout: float = DELIVERY_TIMEOUT
) -> None:
    """Wait until stream info counts `count` events delivered by the Parquet sink."""
    deadline = time.monotonic() + timeout
    last = -1
    for _ in range(int(timeout / 0.1) + 1):
        last = delivered(server, stream)
        if last >= count or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert last == count, (
        f"delivered.parquet of {stream} is {last}, expected {count}\n{server.log(tail=4000)}"
    )


def bucket_ids(s3: S3Server, stream: str, column: str = "n", prefix: str = PREFIX) -> Counter[int]:
    """How many times each id is in the stream's committed files in the bucket."""
    return Counter(r[column] for r in s3.read_dataset_rows(BUCKET, prefix, stream))


def assert_no_hidden_objects(s3: S3Server, bucket: str = BUCKET) -> None:
    """No object in the whole bucket has a name starting with `_` or `.` (work in progress
    is staged in the data dir, never uploaded), and no multipart upload is left open."""
    hidden = [k for k in s3.list_objects(bucket) if is_hidden_key(k)]
    assert hidden == [], f"objects with hidden names in the bucket: {hidden[:20]}"
    assert s3.open_multipart_uploads() == [], "multipart uploads left open on the server"


def assert_exactly_once(counts: Counter[int], acknowledged: set[int], sent: set[int]) -> None:
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not twice, f"{len(twice)} events written more than once: {twice[:20]}"
    missing = sorted(acknowledged - counts.keys())
    assert not missing, f"{len(missing)} acknowledged events are missing: {missing[:20]}"
    unknown = sorted(counts.keys() - sent)
    assert not unknown, f"events that were never sent: {unknown[:20]}"


def micros(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)


# ---------------------------------------------------------------------------------------
# Every type, two dates, several hours: values and partitions exact through the bucket

# test_parquet's schema of every type, with an id to match rows and an epoch-ms timestamp.
TYPES_SCHEMA: dict[str, Any] = {
    **ALL_TYPES_SCHEMA,
    "fields": [
        ALL_TYPES_SCHEMA["fields"][0],
        {"name": "id", "type": "int64"},
        *ALL_TYPES_SCHEMA["fields"][1:],
        {"name": "ms", "type": "timestamp", "epoch_unit": "ms", "nullable": True},
    ],
    "on_invalid": "dead_letter",
}

OFFSETS = [
    dt.timedelta(0),
    dt.timedelta(hours=3),
    dt.timedelta(hours=-2),
    dt.timedelta(hours=5, minutes=30),
]
STRINGS = [
    "",
    "plain",
    "ünïcödé ✓",
    "emoji 🦀🚀",
    "漢字かなカナ",
    'quote " and \\ backslash',
    "tab\tnewline\ncr\r",
    "nul \u0000 byte",
    "x" * 3000,
    "date=2024-01-01/hour=00",
]
FLOATS = [0.0, -1.5, 1e308, 5e-324, -2.2250738585072014e-308, 123456.789, 0.1 + 0.2]


def varied_event(i: int, rng: random.Random) -> tuple[dict[str, Any], dt.datetime]:
    """An event of TYPES_SCHEMA with varied values, and its time in UTC.

    Times spread over 2024-12-31 21:00 .. 2025-01-01 03:00 UTC (two dates, six hours),
    written with various offsets so that the partition must come from the UTC instant.
    """
    utc = dt.datetime(2024, 12, 31, 21, tzinfo=UTC) + dt.timedelta(
        seconds=rng.randrange(6 * 3600), microseconds=rng.randrange(1_000_000)
    )
    local = utc.astimezone(dt.timezone(rng.choice(OFFSETS)))
    ts = local.isoformat().replace("+00:00", "Z")
    event: dict[str, Any] = {
        "ts": ts,
        "id": i,
        "b": rng.random() < 0.5,
        "i32": rng.choice([-(2**31), 2**31 - 1, 0, rng.randint(-(2**31), 2**31 - 1)]),
        "i64": rng.choice([-(2**63), 2**63 - 1, rng.randint(-(2**63), 2**63 - 1)]),
        "f": rng.choice([*FLOATS, rng.uniform(-1e6, 1e6)]),
        "s": rng.choice(STRINGS) + f" #{i}",
        "e": rng.choice(["debug", "info", "warn", "error"]),
        "d": (dt.date(1900, 1, 1) + dt.timedelta(days=rng.randrange(73_000))).isoformat(),
        "dec": f"{rng.choice(['', '-'])}{rng.randrange(10**14)}.{rng.randrange(10**4):04d}",
        "u": str(uuid.UUID(int=rng.getrandbits(128))),
        "j": {
            "i": i,
            "nested": [1, "two", None, True, {"x": rng.random()}],
            "s": rng.choice(STRINGS),
        },
    }
    if rng.random() < 0.3:
        event["u"] = event["u"].upper()
    if rng.random() < 0.5:
        event["opt"] = rng.choice([None, f"opt {i}"])
    if rng.random() < 0.5:
        event["ms"] = rng.randrange(-(10**12), 4 * 10**12)
    return event, utc


def test_dataset_in_the_bucket_has_exact_values_and_utc_partitions(
    make_server: Callable[..., Server], s3_server: S3Server
) -> None:
    """Several hundred events of every type reach `s3://bucket/{3-segment prefix}` exactly:
    values, Hive partitions by UTC time, object names, dead letters; nothing hidden in the
    bucket, nothing left in the local Parquet folder, and delivered == accepted."""
    server = make_server(s3_sink(s3_server) | node("node-s3a"))
    server.create_stream("all", TYPES_SCHEMA)
    rng = random.Random(20241201)
    sent: dict[int, tuple[dict[str, Any], dt.datetime]] = {}
    for start in range(0, 600, 200):
        batch = [varied_event(i, rng) for i in range(start, start + 200)]
        sent.update((e["id"], (e, utc)) for e, utc in batch)
        server.ingest("all", [e for e, _ in batch])
    bad_lines = ['{"ts": "not a time", "id": -1}', '{"id": -2}']
    resp = server.post_events("all", "\n".join(bad_lines) + "\n")
    assert resp.status_code == 200 and resp.json()["dead_lettered"] == 2, resp.text

    wait_delivered(server, "all", len(sent))
    rows = s3_server.read_dataset_rows(BUCKET, PREFIX, "all")
    assert len(rows) == len(sent), f"{len(rows)} rows in the bucket, {len(sent)} sent"
    assert sorted(r["id"] for r in rows) == sorted(sent)
    for row in rows:
        event, utc = sent[row["id"]]
        assert row["ts"] == micros(utc), (event["ts"], row["ts"])
        assert str(row["date"]) == utc.strftime("%Y-%m-%d"), (event["ts"], row["date"])
        assert int(row["hour"]) == utc.hour, (event["ts"], row["hour"])
        assert row["b"] is event["b"]
        assert row["i32"] == event["i32"] and row["i64"] == event["i64"], row
        assert row["f"] == event["f"], (row["f"], event["f"])
        assert row["s"] == event["s"] and row["e"] == event["e"]
        assert row["d"] == dt.date.fromisoformat(event["d"])
        assert row["dec"] == Decimal(event["dec"]), (row["dec"], event["dec"])
        assert row["u"] == uuid.UUID(event["u"]).bytes
        assert json.loads(row["j"]) == event["j"]
        assert row["opt"] == event.get("opt")
        assert row["ms"] == (event["ms"] * 1000 if "ms" in event else None)

    keys = s3_server.list_objects(BUCKET)
    assert keys and all(k.startswith(PREFIX + "/") for k in keys), keys[:10]
    part = re.compile(
        rf"{re.escape(PREFIX)}/all/date=\d{{4}}-\d{{2}}-\d{{2}}/hour=\d{{2}}/"
        r"part-node-s3a-\d{20}-\d{6}\.parquet"
    )
    dead = re.compile(
        rf"{re.escape(PREFIX)}/_dead_letter/all/date=\d{{4}}-\d{{2}}-\d{{2}}/"
        r"dl-node-s3a-\d{20}\.ndjson"
    )
    strays = [k for k in keys if not part.fullmatch(k) and not dead.fullmatch(k)]
    assert strays == [], f"objects outside the documented layout: {strays[:10]}"
    partitions = {tuple(k.split("/")[4:6]) for k in keys if part.fullmatch(k)}
    assert len({p[0] for p in partitions}) == 2 and len(partitions) == 6, partitions
    assert_no_hidden_objects(s3_server)

    first = s3_server.parquet_metadata(
        BUCKET, s3_server.committed_parquet_keys(BUCKET, PREFIX, "all")[0]
    )
    assert (first.metadata or {}).get(b"floodway.stream") == b"all", first.metadata
    letters = wait_for(
        lambda: s3_server.read_dead_letters(BUCKET, PREFIX, "all"),
        timeout=DELIVERY_TIMEOUT,
        what="dead letters in the bucket",
    )
    assert sorted(r["raw"] for r in letters) == sorted(bad_lines), letters
    assert server.parquet_files("all") == [], "Parquet files were also written locally"
    info = server.stream_info("all")
    assert info["accepted"] == info["delivered"]["parquet"] == len(sent), info
    server.stop()


def test_empty_prefix_puts_streams_at_the_top_of_the_bucket(
    make_server: Callable[..., Server], s3_server: S3Server
) -> None:
    """`s3://bucket` (no prefix): objects are `{stream}/date=.../part-*.parquet`."""
    server = make_server(s3_sink(s3_server, prefix="") | node("top"))
    server.create_stream("s", SIMPLE_SCHEMA)
    server.ingest("s", [{"ts": "2024-05-01T12:00:00Z", "n": i} for i in range(10)])
    wait_delivered(server, "s", 10)
    keys = s3_server.list_objects(BUCKET)
    assert keys and all(
        re.fullmatch(r"s/date=2024-05-01/hour=12/part-top-\d{20}-\d{6}\.parquet", k) for k in keys
    ), keys
    assert sorted(bucket_ids(s3_server, "s", prefix="")) == list(range(10))


# ---------------------------------------------------------------------------------------
# A file that needs a multipart upload, and a kill -9 in the middle of it

BLOB_SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "ts", "type": "timestamp"},
        {"name": "n", "type": "int64"},
        {"name": "blob", "type": "string"},
    ],
    "time_field": "ts",
}
# 85 printable ASCII characters (no quote, no backslash): ~6.4 bits of randomness per byte,
# which zstd cannot squeeze, so the Parquet file stays about as big as the text.
_ALPHABET = bytes(c for c in range(0x21, 0x7F) if c not in b'"\\')[:85]
_TO_ALPHABET = bytes(_ALPHABET[i % len(_ALPHABET)] for i in range(256))
BLOB_BYTES = 8192
BIG_EVENTS = 6400  # ~52 MiB of text: > 40 MiB of Parquet
BIG_BATCH = 800  # ~6.6 MiB a request, under max_body_bytes


def random_text(size: int) -> str:
    return os.urandom(size).translate(_TO_ALPHABET).decode()


def test_large_file_goes_up_in_parts_and_survives_a_kill_during_the_upload(
    make_server: Callable[..., Server], s3_server: S3Server
) -> None:
    """> 40 MiB of Parquet in one file goes up as a multipart upload. A kill -9 while its
    parts go up shows no partial object; after the restart the file arrives whole (every
    row once, bytes exact), and the upload the crash abandoned is aborted."""
    # The file is committed when its last row arrives, however long the requests take.
    server = make_server(
        s3_sink(s3_server, parquet={"max_rows": BIG_EVENTS, "max_age": "1h"}) | node("big")
    )
    server.create_stream("big", BLOB_SCHEMA)
    blobs = {i: random_text(BLOB_BYTES) for i in range(BIG_EVENTS)}
    bodies = [
        ndjson(
            [
                {"ts": "2024-05-01T12:00:00Z", "n": i, "blob": blobs[i]}
                for i in range(s, s + BIG_BATCH)
            ]
        )
        for s in range(0, BIG_EVENTS, BIG_BATCH)
    ]
    for body in bodies:
        resp = server.post_events("big", body, timeout=60)
        assert resp.status_code == 200 and resp.json()["accepted"] == BIG_BATCH, resp.text[:300]

    # Parts are going up once the server routes an UploadPart (floodway has the upload id).
    def parts_going_up() -> bool:
        return bool(s3_server.open_multipart_uploads()) and any(
            op == "UploadPart" for op, _ in s3_server.operations()
        )

    wait_for(parts_going_up, timeout=60, interval=0.005, what="a multipart upload under way")
    server.kill()
    abandoned = s3_server.open_multipart_uploads()
    visible = s3_server.committed_parquet_keys(BUCKET, PREFIX, "big")
    # (Rarely the kill lands just after the upload completed: then it is whole and visible.)
    if abandoned:
        assert visible == [], f"objects visible before their upload completed: {visible}"
    for key in visible:
        assert s3_server.parquet_metadata(BUCKET, key).num_rows == BIG_EVENTS, key

    server.restart()
    wait_delivered(server, "big", BIG_EVENTS, timeout=120)
    rows = s3_server.read_dataset_rows(BUCKET, PREFIX, "big")
    counts = Counter(r["n"] for r in rows)
    assert_exactly_once(counts, set(blobs), set(blobs))
    assert all(r["blob"] == blobs[r["n"]] for r in rows), "a blob came back different"

    keys = s3_server.committed_parquet_keys(BUCKET, PREFIX, "big")
    sizes = {k: s3_server.object_size(BUCKET, k) for k in keys}
    biggest = max(sizes, key=lambda k: sizes[k])
    assert sizes[biggest] > 40 << 20, f"no file above 40 MiB: {sizes}"
    ops = s3_server.operations()
    completed = [p for op, p in ops if op == "CompleteMultipartUpload" and biggest in p]
    assert completed, f"{biggest} did not go up as a multipart upload: {Counter(o for o, _ in ops)}"
    assert_no_hidden_objects(s3_server)
    if abandoned:
        aborted = [p for op, p in ops if op == "AbortMultipartUpload"]
        assert aborted, f"the upload the kill abandoned ({abandoned}) was never aborted"
    server.stop()


# ---------------------------------------------------------------------------------------
# kill -9 in a loop while clients ingest


def test_crash_loop_keeps_every_acknowledged_event_exactly_once_in_the_bucket(
    make_server: Callable[..., Server], s3_server: S3Server
) -> None:
    """The crash loop of test_durability against an s3:// target: files commit every
    200 ms or 250 rows, so kills land in every phase of staging and uploading. After a
    clean restart every acknowledged id is in the bucket exactly once, nothing hidden or
    half-uploaded is there, and delivered == accepted."""
    server = make_server(deep_merge(S3_CHURN, s3_sink(s3_server)) | node("crash-s3"))
    server.create_stream("s", SIMPLE_SCHEMA)

    def two_hours(ids: list[int]) -> list[dict[str, Any]]:
        return [{"ts": f"2024-05-01T1{i % 2}:00:00Z", "n": i} for i in ids]

    acknowledged, sent, kills = crash_loop(
        server, "s", two_hours, seed=20241202, max_kills=20, wait=(0.05, 0.6), time_limit=25
    )
    assert kills >= 8, f"only {kills} kills in the time allowed"
    assert len(acknowledged) > 500, "the loop acknowledged too little to mean anything"
    wait_all_delivered(server, "s", "parquet", DELIVERY_TIMEOUT)
    final = server.stream_info("s")
    server.stop()

    counts = bucket_ids(s3_server, "s")
    assert_exactly_once(counts, acknowledged, sent)
    # Events made durable but whose answer was lost to a kill count as accepted too.
    assert sum(counts.values()) == final["accepted"] == final["delivered"]["parquet"], final
    keys = s3_server.committed_parquet_keys(BUCKET, PREFIX, "s")
    assert all("/part-crash-s3-" in k for k in keys), keys[:5]
    assert_no_hidden_objects(s3_server)


# ---------------------------------------------------------------------------------------
# The store goes away while ingesting and comes back


def test_store_outage_keeps_ingesting_and_catches_up_exactly_once(
    make_server: Callable[..., Server], s3_server: S3Server
) -> None:
    """With the S3 server down, every request still answers 200, /readyz stays 200 with
    sinks.parquet "degraded"; once the server is back (same port, same folder) the sink
    catches up by itself: every acknowledged event once, and "ok" again."""
    server = make_server(s3_sink(s3_server))
    server.create_stream("s", SIMPLE_SCHEMA)

    def six_files(ids: list[int]) -> list[dict[str, Any]]:
        # Two days, three hours each: a batch spreads over six files.
        return [{"ts": f"2024-06-{1 + i % 2:02d}T{i % 3:02d}:00:00Z", "n": i} for i in ids]

    send = BatchSender(server, "s", six_files)
    acknowledged, codes = send.acknowledged, send.codes

    for _ in range(10):
        send()
    wait_delivered(server, "s", len(acknowledged))
    wait_sink_status(server, "parquet", "ok", DELIVERY_TIMEOUT)

    s3_server.stop()
    try:
        code, body = send_until_degraded(server, "parquet", send, DELIVERY_TIMEOUT)
        assert code == 200, body  # a degraded sink alone does not make the node unready
        # A few seconds of backlog while the sink retries and backs off.
        keep_sending(send, 3)
        assert sink_status(server, "parquet") == "degraded"
        assert set(codes) == {200}, codes
    finally:
        s3_server.start()

    for _ in range(5):
        send()
    wait_delivered(server, "s", len(acknowledged))
    wait_sink_status(server, "parquet", "ok", DELIVERY_TIMEOUT)
    assert set(codes) == {200}, f"some requests were not acknowledged: {codes}"
    counts = bucket_ids(s3_server, "s")
    assert_exactly_once(counts, acknowledged, acknowledged)
    assert sum(counts.values()) == len(acknowledged)
    assert_no_hidden_objects(s3_server)
    server.stop()


# ---------------------------------------------------------------------------------------
# Two nodes, one bucket and prefix (and one PostgreSQL database)


@pytest.mark.parametrize("with_postgres", [False, True], ids=["s3", "s3-and-postgres"])
def test_two_nodes_share_a_prefix_without_overwriting_each_other(
    make_server: Callable[..., Server],
    s3_server: S3Server,
    request: pytest.FixtureRequest,
    with_postgres: bool,
) -> None:
    """Two nodes (own data dirs, node ids a and b) write distinct events to the same
    prefix: their WALs number records alike, so only the node id in the object names
    keeps them apart. The union in the bucket (and in the PostgreSQL table) holds every
    event exactly once, and each object name carries its node's id."""
    config = s3_sink(s3_server)
    pg_db = None
    if with_postgres:
        from test_postgres import check_ledger_invariants, ids, pg_sink, wait_count

        pg_db = request.getfixturevalue("pg_db")
        config = deep_merge(config, pg_sink(pg_db))
    node_a = make_server(config | node("node-a"))
    node_b = make_server(config | node("node-b"))
    for server in (node_a, node_b):
        server.create_stream("s", SIMPLE_SCHEMA)
    for i in range(5):
        node_a.ingest("s", [{"ts": "2024-05-01T12:00:00Z", "n": i * 10 + j} for j in range(10)])
        node_b.ingest(
            "s", [{"ts": "2024-05-01T12:00:00Z", "n": 1000 + i * 10 + j} for j in range(10)]
        )
    wait_delivered(node_a, "s", 50)
    wait_delivered(node_b, "s", 50)
    expected = set(range(50)) | set(range(1000, 1050))
    counts = bucket_ids(s3_server, "s")
    assert_exactly_once(counts, expected, expected)
    keys = s3_server.committed_parquet_keys(BUCKET, PREFIX, "s")
    names = [k.rsplit("/", 1)[1] for k in keys]
    assert all(n.startswith(("part-node-a-", "part-node-b-")) for n in names), names
    assert any(n.startswith("part-node-a-") for n in names), names
    assert any(n.startswith("part-node-b-") for n in names), names
    if pg_db is not None:
        wait_count(pg_db, "s", 100, server=node_b)
        assert Counter(ids(pg_db, "s")) == Counter(expected)
        rows = check_ledger_invariants(pg_db)
        assert {r[0] for r in rows} <= {"node-a", "node-b"}, rows
        for server in (node_a, node_b):
            assert server.stream_info("s")["delivered"] == {"parquet": 50, "postgres": 50}
    assert_no_hidden_objects(s3_server)


# ---------------------------------------------------------------------------------------
# Bad settings: a clear error at start, or a degraded sink naming the cause; then fixed


def start_or_refusal(server: Server, timeout: float = READY_TIMEOUT) -> str | None:
    """Start the server; None once it is ready, or the log of its refusal to start.

    A refusal is an exit with a non-zero code before turning ready; neither within
    `timeout` fails the test.
    """
    server.spawn()
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        code = server.proc.poll()
        if code is not None:
            assert code > 0, f"floodway ended with {code} instead of refusing to start"
            return server.log()
        try:
            if requests.get(server.url("/readyz"), timeout=1).status_code == 200:
                return None
        except requests.RequestException:
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    server.kill()
    raise AssertionError(f"floodway neither turned ready nor exited in {timeout}s\n{server.log()}")


@pytest.mark.parametrize("problem", ["missing-bucket", "wrong-secret", "nothing-listening"])
def test_bad_settings_are_named_and_nothing_is_lost_once_fixed(
    make_server: Callable[..., Server], s3_server: S3Server, tmp_path: Path, problem: str
) -> None:
    """A bucket that does not exist, a wrong secret, or an endpoint where nothing listens:
    floodway either refuses to start with a message naming the problem, or starts,
    acknowledges events (200), shows sinks.parquet "degraded" and logs the cause. Once
    the problem is fixed (bucket created, right secret after a restart on the same data
    dir, a server started on that port) every acknowledged event arrives exactly once."""
    late: S3Server | None = None
    # The log or the refusal must hold one word of each group.
    if problem == "missing-bucket":
        config = s3_sink(s3_server, bucket="not-yet-there")
        clues = [
            ["not-yet-there"],
            ["nosuchbucket", "no such bucket", "does not exist", "not found"],
        ]
    elif problem == "wrong-secret":
        config = s3_sink(s3_server, secret_access_key="fwWrong/Secret+Key-000000000000")
        clues = [
            ["signaturedoesnotmatch", "invalidaccesskeyid", "accessdenied", "access denied", "403",
             "forbidden", "privileges"],
        ]  # fmt: skip
    else:
        dead_port = free_port()
        assert not port_is_open(dead_port)
        late = S3Server(tmp_path / "late-s3", port=dead_port)
        config = s3_sink(late)
        clues = [[f"127.0.0.1:{dead_port}"], ["connect", "refused", "unreachable"]]

    def names_the_problem(text: str) -> bool:
        return all(any(word in text.lower() for word in group) for group in clues)

    server = make_server(config | node("bad"), start=False)
    try:
        refusal = start_or_refusal(server)
        acknowledged: set[int] = set()
        if refusal is not None:
            assert names_the_problem(refusal), f"the refusal does not name {problem}:\n{refusal}"
        else:
            server.create_stream("s", SIMPLE_SCHEMA)
            for start in range(0, 60, 20):
                server.ingest(
                    "s", [{"ts": "2024-05-01T12:00:00Z", "n": i} for i in range(start, start + 20)]
                )
                acknowledged.update(range(start, start + 20))
            wait_sink_status(server, "parquet", "degraded", DELIVERY_TIMEOUT)
            assert readyz(server)[0] == 200
            assert delivered(server, "s") == 0

            wait_for(
                lambda: names_the_problem(server.log(tail=1_000_000)),
                timeout=DELIVERY_TIMEOUT,
                interval=0.2,
                what=f"a log line naming the problem ({problem}: one of {clues})",
            )

        # Fix it.
        if problem == "missing-bucket":
            s3_server.create_bucket("not-yet-there")
        elif problem == "wrong-secret":
            if server.running():
                server.stop()
            server.config = deep_merge(server.config, s3_sink(s3_server))
            assert server.config_path is not None
            server.config_path.write_text(to_toml(server.config))
        else:
            assert late is not None
            late.start()
            late.create_bucket(BUCKET)
        if not server.running():
            server.start()
            if refusal is not None:
                server.create_stream("s", SIMPLE_SCHEMA)
            server.ingest("s", [{"ts": "2024-05-01T12:00:00Z", "n": i} for i in range(60, 70)])
            acknowledged.update(range(60, 70))
        wait_delivered(server, "s", len(acknowledged))
        wait_sink_status(server, "parquet", "ok", DELIVERY_TIMEOUT)
        store = late if late is not None else s3_server
        bucket = "not-yet-there" if problem == "missing-bucket" else BUCKET
        rows = store.read_dataset_rows(bucket, PREFIX, "s")
        assert_exactly_once(Counter(r["n"] for r in rows), acknowledged, acknowledged)
        assert_no_hidden_objects(store, bucket)
        server.stop()
    finally:
        if late is not None:
            late.kill()


# ---------------------------------------------------------------------------------------
# `floodway check` refuses settings that cannot work


@pytest.mark.parametrize(
    "parquet,key",
    [
        (
            {
                "target": "s3://floodway-test/p",
                "s3": {"endpoint": "http://127.0.0.1:9", "allow_http": False},
            },
            "sinks.parquet.s3.allow_http",
        ),
        (
            {"target": "s3://floodway-test/p", "s3": {"endpoint": "http://127.0.0.1:9"}},
            "sinks.parquet.s3.allow_http",
        ),
        ({"target": "./local-parquet", "s3": {"region": "eu-west-1"}}, "sinks.parquet.s3"),
        (
            {"target": "file:///tmp/floodway-parquet", "s3": {"endpoint": "https://s3.example"}},
            "sinks.parquet.s3",
        ),
        ({"target": "s3://"}, "sinks.parquet.target"),
        ({"target": "s3:///prefix/only"}, "sinks.parquet.target"),
    ],
    ids=[
        "http-without-allow_http",
        "http-allow_http-default",
        "s3-table-local-path",
        "s3-table-file-url",
        "no-bucket",
        "empty-bucket",
    ],
)
def test_check_refuses_s3_settings_that_cannot_work(
    tmp_path: Path, parquet: dict[str, Any], key: str
) -> None:
    """`floodway check` exits 1 naming the key; `serve` refuses the same before binding."""
    path = tmp_path / "floodway.toml"
    path.write_text(to_toml({"sinks": {"parquet": parquet}}))
    result = run_cli(["check", "--config", str(path)], cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert key in result.stderr, result.stderr
    port = free_port()
    serve = run_cli(
        [
            "serve",
            "--config",
            str(path),
            "--bind",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=tmp_path,
        timeout=15,
    )
    assert serve.returncode != 0 and key in serve.stderr, (serve.returncode, serve.stderr)


def test_check_accepts_a_working_s3_target(tmp_path: Path, s3_server: S3Server) -> None:
    """The refusals above are about the settings: a correct s3:// config passes `check`."""
    path = tmp_path / "floodway.toml"
    path.write_text(to_toml(s3_sink(s3_server)))
    result = run_cli(["check", "--config", str(path)], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)


# ---------------------------------------------------------------------------------------
# The secret never shows


@pytest.mark.parametrize("source", ["config", "aws-environment", "floodway-environment"])
def test_secret_never_appears_in_logs_or_answers(
    make_server: Callable[..., Server], s3_server: S3Server, tmp_path: Path, source: str
) -> None:
    """At --log-level debug, neither the right secret (a working node) nor a wrong one (a
    node whose requests are refused) shows in the log, /readyz, /metrics, stream info or
    `floodway check` output, whether it comes from the config file, AWS_SECRET_ACCESS_KEY
    (with empty settings), or FLOODWAY_SINKS__PARQUET__S3__SECRET_ACCESS_KEY."""
    wrong = "fwWrong/Secret+Key-4d2f0e9a7b1c"
    secrets = {s3_server.secret_key, wrong}
    forms = secrets | {quote(s, safe="") for s in secrets} | {json.dumps(s)[1:-1] for s in secrets}
    texts: dict[str, str] = {}

    def node_for(secret: str) -> tuple[dict[str, Any], dict[str, str]]:
        if source == "config":
            return s3_sink(s3_server, secret_access_key=secret), {}
        if source == "aws-environment":
            config = s3_sink(s3_server, access_key_id="", secret_access_key="")
            env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": secret}
            return config, env
        config = s3_sink(s3_server)
        del config["sinks"]["parquet"]["s3"]["secret_access_key"]
        return config, {"FLOODWAY_SINKS__PARQUET__S3__SECRET_ACCESS_KEY": secret}

    for label, secret in (("working", s3_server.secret_key), ("refused", wrong)):
        config, env = node_for(secret)
        server = make_server(config, env=env, extra_args=["--log-level", "debug"], start=False)
        refusal = start_or_refusal(server)
        if refusal is None:
            server.create_stream("s", SIMPLE_SCHEMA)
            server.ingest("s", [{"ts": "2024-05-01T12:00:00Z", "n": i} for i in range(5)])
            if label == "working":
                wait_delivered(server, "s", 5)
            else:
                wait_sink_status(server, "parquet", "degraded", DELIVERY_TIMEOUT)
            texts[f"/readyz ({label})"] = server.get("/readyz").text
            texts[f"/metrics ({label})"] = server.get("/metrics").text
            texts[f"stream info ({label})"] = server.get("/v1/streams/s").text
            server.stop()
        texts[f"the log ({label})"] = server.log(tail=10_000_000)
        assert server.config_path is not None
        check = run_cli(["check", "--config", str(server.config_path)], cwd=tmp_path, env=env)
        texts[f"floodway check ({label})"] = check.stdout + check.stderr
    for where, text in texts.items():
        for form in forms:
            assert form not in text, f"the secret shows in {where}"
    assert BUCKET in texts["the log (refused)"], "the refused requests should be logged"
