"""SPEC §2, §3, §6, §7 PostgreSQL sink: tables, types, partitions, exactly-once delivery.

Each test gets a fresh database on a throwaway PostgreSQL server (fixtures `pg_cluster` and
`pg_db`, see pg.py) and points a real `floodway serve` at it with `[sinks.postgres]`. What
arrived is read back with SQL.

The sink's table layout, as designed:
- one table per stream, `"{schema}"."{stream}"`: the schema's fields in order, same names
  (case kept), plus `"_extra" jsonb` under `unknown_fields = "keep"`; non-nullable fields
  are NOT NULL; types as in SPEC §3;
- range-partitioned on the time field; partitions `"_{stream}_{suffix}"` in the same
  schema, suffix `YYYY_MM_DD_HH` / `YYYY_MM_DD` / `YYYY_MM` (UTC), and `"_{stream}_default"`;
- a ledger `"{schema}"."_floodway_ledger"` with one row per COPY transaction, keyed by
  (node_id, stream, first_lsn); old rows may be pruned, so their number is never asserted.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest

from harness import (
    SIMPLE_SCHEMA,
    BatchSender,
    Server,
    crash_loop,
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
from pg import PgDatabase, connect, quote_ident

UTC = dt.UTC

DELIVERY_TIMEOUT = 30.0  # seconds for events to show up in PostgreSQL

EVENTS_SCHEMA = SIMPLE_SCHEMA  # ts, n (int64), msg (nullable string)


def pg_sink(db: PgDatabase | str, **settings: Any) -> dict[str, Any]:
    """Config overrides that turn on the PostgreSQL sink (partition by day unless told)."""
    url = db if isinstance(db, str) else db.url
    return {"sinks": {"postgres": {"url": url, "partition": "day", **settings}}}


def ev(n: int, ts: str = "2024-05-01T12:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "n": n, **extra}


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def wait_count(
    db: PgDatabase,
    table: str,
    expected: int,
    *,
    schema: str = "public",
    server: Server | None = None,
    timeout: float = DELIVERY_TIMEOUT,
) -> None:
    """Wait until the table holds `expected` rows; fail with the count and the log if not."""
    deadline = time.monotonic() + timeout
    count = -1
    for _ in range(int(timeout / 0.1) + 1):
        count = db.count(schema, table)
        if count >= expected:
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    log = server.log() if server is not None else ""
    assert count == expected, f"{schema}.{table} holds {count} rows, expected {expected}\n{log}"


def columns(db: PgDatabase, schema: str, table: str) -> list[tuple[str, str, bool]]:
    """(name, format_type, NOT NULL) of each column of a table, in order."""
    rows = db.query(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace ns ON ns.oid = c.relnamespace"
        " WHERE ns.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        (schema, table),
    )
    return [(r[0], r[1], r[2]) for r in rows]


def partitions(db: PgDatabase, schema: str, table: str) -> list[tuple[str, str]]:
    """(schema, name) of the partitions of a table."""
    rows = db.query(
        "SELECT ns.nspname, c.relname FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace"
        " WHERE i.inhparent = %s::regclass ORDER BY 2",
        (qualified(schema, table),),
    )
    return [(r[0], r[1]) for r in rows]


def partition_of_rows(db: PgDatabase, schema: str, table: str) -> list[tuple[int, str, str]]:
    """(n, partition schema, partition name) for every row of a table."""
    rows = db.query(
        f"SELECT t.n, ns.nspname, c.relname FROM {qualified(schema, table)} t"
        " JOIN pg_class c ON c.oid = t.tableoid JOIN pg_namespace ns ON ns.oid = c.relnamespace"
    )
    return [(r[0], r[1], r[2]) for r in rows]


def ids(db: PgDatabase, table: str, schema: str = "public", column: str = "n") -> list[int]:
    return [r[0] for r in db.query(f"SELECT {quote_ident(column)} FROM {qualified(schema, table)}")]


def metric_samples(server: Server, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of one metric in GET /metrics."""
    text = server.get("/metrics").text
    out = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
            out.append((labels, float(match.group(2))))
    return out


def sink_events(server: Server, sink: str, stream: str) -> float | None:
    for labels, value in metric_samples(server, "floodway_sink_events_total"):
        if labels.get("sink") == sink and labels.get("stream") == stream:
            return value
    return None


def ledger_rows(db: PgDatabase, schema: str = "public") -> list[tuple[Any, ...]]:
    return db.query(
        "SELECT node_id, stream, first_lsn, last_lsn, rows, committed_at"
        f" FROM {qualified(schema, '_floodway_ledger')} ORDER BY node_id, stream, first_lsn"
    )


def check_ledger_invariants(db: PgDatabase, schema: str = "public") -> list[tuple[Any, ...]]:
    """Every ledger row is sane, and one node's ranges for one stream never overlap."""
    rows = ledger_rows(db, schema)
    last_end: dict[tuple[str, str], int] = {}
    for node_id, stream, first, last, count, committed_at in rows:
        assert first <= last, rows
        assert count >= 1, rows
        assert committed_at is not None, rows
        key = (node_id, stream)
        if key in last_end:
            assert first > last_end[key], f"overlapping ledger ranges for {key}: {rows}"
        last_end[key] = last
    return rows


# =======================================================================================
# (a) types: every SPEC §3 type round-trips exactly


ABSENT = object()  # the field is left out of the event


def raw_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def ts_utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


LONG_TEXT = "x" * 10_000 + "é"
TRICKY_TEXT = "quote\" backslash\\ tab\t newline\n cr\r comma, semicolon; 'single'"
JSON_VALUES: list[Any] = [
    {"a": [1, 2.5, "x", None, True], "b": {"c": "ü"}},
    [],
    "just a string",
    42,
    {"deep": {"er": {"est": [{"k": "v"}, False]}}},
    {"unicode": "😀 日本", "esc": 'a"b\\c', "n": -1.25e-5},
]

# Each column: (name, field spec, PostgreSQL format_type, NOT NULL, [(raw JSON, expected)] x 6).
# `expected` is the value psycopg reads back; for numeric columns it is the text
# of the value (compared with the column's ::text, digit for digit).
TYPE_COLUMNS: list[tuple[str, dict[str, Any], str, bool, list[tuple[Any, Any]]]] = [
    ("k", {"type": "int32"}, "integer", True, [(str(i), i) for i in range(6)]),
    (
        "ts",
        {"type": "timestamp"},
        "timestamp with time zone",
        True,
        [
            ('"2024-05-01T12:34:56.123456Z"', ts_utc(2024, 5, 1, 12, 34, 56, 123456)),
            ('"2024-05-01T14:34:56.000001+02:00"', ts_utc(2024, 5, 1, 12, 34, 56, 1)),
            ('"2024-04-30T23:59:59.999999-05:30"', ts_utc(2024, 5, 1, 5, 29, 59, 999999)),
            ('"2024-05-01T00:00:00.000000000Z"', ts_utc(2024, 5, 1)),
            ('"2024-05-01T23:59:59.5Z"', ts_utc(2024, 5, 1, 23, 59, 59, 500000)),
            ('"2024-05-02T00:00:00+00:00"', ts_utc(2024, 5, 2)),
        ],
    ),
    (
        "te",
        {"type": "timestamp", "epoch_unit": "ms", "nullable": True},
        "timestamp with time zone",
        False,
        [
            ("1714566896123", ts_utc(2024, 5, 1, 12, 34, 56, 123000)),
            ("0", ts_utc(1970, 1, 1)),
            ("-1", ts_utc(1969, 12, 31, 23, 59, 59, 999000)),
            ("null", None),
            (ABSENT, None),
            ("253402300799999", ts_utc(9999, 12, 31, 23, 59, 59, 999000)),
        ],
    ),
    (
        "t2",
        {"type": "timestamp", "nullable": True},
        "timestamp with time zone",
        False,
        [
            ('"0001-01-01T00:00:00Z"', ts_utc(1, 1, 1)),
            ('"9999-12-31T23:59:59.999999Z"', ts_utc(9999, 12, 31, 23, 59, 59, 999999)),
            ('"2024-02-29T23:59:59.999999+14:00"', ts_utc(2024, 2, 29, 9, 59, 59, 999999)),
            ('"1969-12-31T23:59:59.999999Z"', ts_utc(1969, 12, 31, 23, 59, 59, 999999)),
            ("null", None),
            (ABSENT, None),
        ],
    ),
    (
        "b",
        {"type": "bool"},
        "boolean",
        True,
        [("true", True), ("false", False)] * 3,
    ),
    (
        "i32",
        {"type": "int32"},
        "integer",
        True,
        [
            ("2147483647", 2147483647),
            ("-2147483648", -2147483648),
            ("0", 0),
            ("-1", -1),
            ("1", 1),
            ("123456789", 123456789),
        ],
    ),
    (
        "i64",
        {"type": "int64"},
        "bigint",
        True,
        [
            ("9223372036854775807", 9223372036854775807),
            ("-9223372036854775808", -9223372036854775808),
            ("0", 0),
            ("-1", -1),
            ("9007199254740993", 9007199254740993),  # 2^53 + 1: no float on the way
            ("-9007199254740993", -9007199254740993),
        ],
    ),
    (
        "f",
        {"type": "float64"},
        "double precision",
        True,
        [
            ("0.1", 0.1),
            ("-2.5e-300", -2.5e-300),
            ("5e-324", 5e-324),
            ("1.7976931348623157e308", 1.7976931348623157e308),
            ("-0.0", -0.0),
            ("9007199254740993", 9007199254740992.0),
        ],
    ),
    (
        "s",
        {"type": "string"},
        "text",
        True,
        [
            (
                raw_json("héllo wörld ✓ 😀 日本語 e\u0301 \u200f"),
                "héllo wörld ✓ 😀 日本語 e\u0301 \u200f",
            ),
            ('""', ""),
            (raw_json(TRICKY_TEXT), TRICKY_TEXT),
            (raw_json("\\N"), "\\N"),
            (raw_json(LONG_TEXT), LONG_TEXT),
            ('"NULL"', "NULL"),
        ],
    ),
    (
        "e",
        {"type": "enum", "values": ["debug", "info", "warn", "error"]},
        "text",
        True,
        [(raw_json(v), v) for v in ["debug", "info", "warn", "error", "info", "debug"]],
    ),
    (
        "d",
        {"type": "date"},
        "date",
        True,
        [
            ('"2024-02-29"', dt.date(2024, 2, 29)),
            ('"1970-01-01"', dt.date(1970, 1, 1)),
            ('"0001-01-01"', dt.date(1, 1, 1)),
            ('"9999-12-31"', dt.date(9999, 12, 31)),
            ('"1999-12-31"', dt.date(1999, 12, 31)),
            ('"2000-01-01"', dt.date(2000, 1, 1)),
        ],
    ),
    (
        "dec",
        {"type": "decimal", "precision": 18, "scale": 4},
        "numeric(18,4)",
        True,
        [
            ('"12345678901234.5678"', "12345678901234.5678"),
            ('"-99999999999999.9999"', "-99999999999999.9999"),
            ("5", "5.0000"),
            ('"1.50"', "1.5000"),
            ('"0.12340"', "0.1234"),
            ("-0.0001", "-0.0001"),
        ],
    ),
    (
        "big",
        {"type": "decimal", "precision": 38, "scale": 10},
        "numeric(38,10)",
        True,
        [
            (
                '"9999999999999999999999999999.9999999999"',
                "9999999999999999999999999999.9999999999",
            ),
            (
                '"-9999999999999999999999999999.9999999999"',
                "-9999999999999999999999999999.9999999999",
            ),
            ('"0.0000000001"', "0.0000000001"),
            ("-0.0000000001", "-0.0000000001"),
            ("0", "0.0000000000"),
            ('"1234567890123456789.0123456789"', "1234567890123456789.0123456789"),
        ],
    ),
    (
        "u",
        {"type": "uuid"},
        "uuid",
        True,
        [
            (
                '"123e4567-e89b-12d3-a456-426614174000"',
                uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
            ),
            (
                '"ABCDEF01-2345-6789-ABCD-EF0123456789"',
                uuid.UUID("abcdef01-2345-6789-abcd-ef0123456789"),
            ),
            ('"00000000-0000-0000-0000-000000000000"', uuid.UUID(int=0)),
            ('"ffffffff-ffff-ffff-ffff-ffffffffffff"', uuid.UUID(int=2**128 - 1)),
            (
                '"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"',
                uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            ),
            (
                '"01890a5d-ac96-774b-bcce-b302099a8057"',
                uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
            ),
        ],
    ),
    ("j", {"type": "json"}, "jsonb", True, [(raw_json(v), v) for v in JSON_VALUES]),
    (
        "n_i",
        {"type": "int64", "nullable": True},
        "bigint",
        False,
        [("null", None), (ABSENT, None), ("7", 7), ("null", None), ("-7", -7), (ABSENT, None)],
    ),
    (
        "n_s",
        {"type": "string", "nullable": True},
        "text",
        False,
        [
            ("null", None),
            ('"x"', "x"),
            (ABSENT, None),
            ('""', ""),
            ("null", None),
            ('"null"', "null"),
        ],
    ),
    (
        "n_dec",
        {"type": "decimal", "precision": 10, "scale": 2, "nullable": True},
        "numeric(10,2)",
        False,
        [
            ("null", None),
            ('"1.25"', "1.25"),
            (ABSENT, None),
            ("-99999999.99", "-99999999.99"),
            ("null", None),
            ("0", "0.00"),
        ],
    ),
    (
        "n_u",
        {"type": "uuid", "nullable": True},
        "uuid",
        False,
        [
            (ABSENT, None),
            ("null", None),
            (
                '"123e4567-e89b-12d3-a456-426614174000"',
                uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
            ),
            (ABSENT, None),
            ("null", None),
            (ABSENT, None),
        ],
    ),
    (
        "n_d",
        {"type": "date", "nullable": True},
        "date",
        False,
        [
            ("null", None),
            (ABSENT, None),
            ('"2024-01-01"', dt.date(2024, 1, 1)),
            ("null", None),
            (ABSENT, None),
            ("null", None),
        ],
    ),
    (
        "n_b",
        {"type": "bool", "nullable": True},
        "boolean",
        False,
        [
            ("null", None),
            ("false", False),
            (ABSENT, None),
            ("true", True),
            ("null", None),
            (ABSENT, None),
        ],
    ),
    (
        "n_f",
        {"type": "float64", "nullable": True},
        "double precision",
        False,
        [
            ("null", None),
            (ABSENT, None),
            ("1.5", 1.5),
            ("null", None),
            ("-1e-10", -1e-10),
            (ABSENT, None),
        ],
    ),
    (
        "n_j",
        {"type": "json", "nullable": True},
        "jsonb",
        False,
        [
            (ABSENT, None),
            ('{"x": 1}', {"x": 1}),
            (ABSENT, None),
            ("[1, 2]", [1, 2]),
            (ABSENT, None),
            ('"s"', "s"),
        ],
    ),
    (
        "CamelCase",
        {"type": "int32", "nullable": True},
        "integer",
        False,
        [("1", 1), ("null", None), ("3", 3), (ABSENT, None), ("5", 5), ("6", 6)],
    ),
]
NUMERIC_COLUMNS = {"dec", "big", "n_dec"}
FLOAT_COLUMNS = {"f", "n_f"}
JSON_COLUMNS = {"j", "n_j"}
TYPE_ROWS = 6

TYPES_SCHEMA: dict[str, Any] = {
    "fields": [{"name": name, **spec} for name, spec, _, _, _ in TYPE_COLUMNS],
    "time_field": "ts",
}


def types_body() -> bytes:
    lines = []
    for i in range(TYPE_ROWS):
        parts = [
            f"{json.dumps(name)}: {cases[i][0]}"
            for name, _, _, _, cases in TYPE_COLUMNS
            if cases[i][0] is not ABSENT
        ]
        lines.append("{" + ", ".join(parts) + "}\n")
    return "".join(lines).encode()


def float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


def test_every_type_round_trips_exactly(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db))
    server.create_stream("types", TYPES_SCHEMA)
    resp = server.post_events("types", types_body())
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == TYPE_ROWS, resp.text
    wait_count(pg_db, "types", TYPE_ROWS, server=server)

    # Column names, order, types and NOT NULL exactly as the schema says.
    expected_columns = [(name, typ, notnull) for name, _, typ, notnull, _ in TYPE_COLUMNS]
    assert columns(pg_db, "public", "types") == expected_columns

    select = ", ".join(
        f"{quote_ident(name)}::text" if name in NUMERIC_COLUMNS else quote_ident(name)
        for name, *_ in TYPE_COLUMNS
    )
    rows = pg_db.query(f"SELECT {select} FROM public.types ORDER BY k")
    assert len(rows) == TYPE_ROWS
    for i, row in enumerate(rows):
        for (name, _, _, _, cases), got in zip(TYPE_COLUMNS, row, strict=True):
            expected = cases[i][1]
            where = f"row {i} column {name}: sent {cases[i][0]!r}"
            if name in FLOAT_COLUMNS and expected is not None:
                assert isinstance(got, float), (where, got)
                assert float_bits(got) == float_bits(expected), (where, got, expected)
            elif isinstance(expected, dt.datetime):
                assert got == expected and got.microsecond == expected.microsecond, (where, got)
            else:
                assert got == expected, (where, got, expected)
                assert type(got) is type(expected), (where, type(got), type(expected))
    # Decimals also as values, and jsonb equal to the input as PostgreSQL sees it.
    decs = pg_db.query("SELECT dec, big FROM public.types ORDER BY k")
    cases = {name: cases for name, _, _, _, cases in TYPE_COLUMNS}
    for i, (dec, big) in enumerate(decs):
        assert isinstance(dec, Decimal) and dec == Decimal(cases["dec"][i][1]), (i, dec)
        assert isinstance(big, Decimal) and big == Decimal(cases["big"][i][1]), (i, big)
    for i, value in enumerate(JSON_VALUES):
        same = pg_db.scalar(
            "SELECT j = %s::jsonb FROM public.types WHERE k = %s", (json.dumps(value), i)
        )
        assert same is True, (i, value)
    # Timestamps are stored as UTC instants: the text in UTC, to the microsecond.
    texts = pg_db.query(
        "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        " FROM public.types ORDER BY k"
    )
    assert [t[0] for t in texts] == [
        "2024-05-01T12:34:56.123456",
        "2024-05-01T12:34:56.000001",
        "2024-05-01T05:29:59.999999",
        "2024-05-01T00:00:00.000000",
        "2024-05-01T23:59:59.500000",
        "2024-05-02T00:00:00.000000",
    ]


def test_enum_check_constraint_refuses_other_values(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db))
    server.create_stream("types", TYPES_SCHEMA)
    assert server.post_events("types", types_body()).status_code == 200
    wait_count(pg_db, "types", TYPE_ROWS, server=server)

    names = [name for name, *_ in TYPE_COLUMNS]
    column_list = ", ".join(quote_ident(n) for n in names)

    def copy_row_with_e(value: str) -> str:
        exprs = ", ".join("%s" if n == "e" else quote_ident(n) for n in names)
        return (
            f"INSERT INTO public.types ({column_list}) SELECT {exprs} FROM public.types WHERE k = 0"
        )

    with connect(pg_db.url, autocommit=False) as conn:
        # The same statement with an allowed value works, so only the value is at fault.
        conn.execute(copy_row_with_e("warn"), ("warn",))
        conn.rollback()
        for bad in ["fatal", "Debug", "", "debug "]:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(copy_row_with_e(bad), (bad,))
            conn.rollback()
    assert pg_db.count("public", "types") == TYPE_ROWS


# =======================================================================================
# (b) partitions

# (as sent, the same instant in UTC): across hour, day, month and leap-day boundaries.
PARTITION_TIMES = [
    ("2024-01-31T23:59:59.999999Z", ts_utc(2024, 1, 31, 23, 59, 59, 999999)),
    ("2024-02-01T00:00:00Z", ts_utc(2024, 2, 1)),
    ("2024-02-01T00:59:59.999999Z", ts_utc(2024, 2, 1, 0, 59, 59, 999999)),
    ("2024-02-01T01:00:00Z", ts_utc(2024, 2, 1, 1)),
    ("2024-02-01T02:30:00+03:00", ts_utc(2024, 1, 31, 23, 30)),
    ("2024-02-29T12:00:00-12:00", ts_utc(2024, 3, 1)),
    ("2024-02-29T23:59:59Z", ts_utc(2024, 2, 29, 23, 59, 59)),
    ("2024-03-01T00:00:00.000001Z", ts_utc(2024, 3, 1, 0, 0, 0, 1)),
    ("2024-03-05T13:14:15Z", ts_utc(2024, 3, 5, 13, 14, 15)),
    ("2024-03-05T14:59:00+01:00", ts_utc(2024, 3, 5, 13, 59)),
    ("2024-03-05T15:00:00+01:00", ts_utc(2024, 3, 5, 14)),
]
SUFFIX_FORMATS = {"hour": "%Y_%m_%d_%H", "day": "%Y_%m_%d", "month": "%Y_%m"}
LATE = ("1999-06-15T08:09:10Z", ts_utc(1999, 6, 15, 8, 9, 10))


@pytest.mark.parametrize("partition", ["day", "hour", "month"])
def test_events_land_in_their_utc_partitions(
    make_server: Callable[..., Server], pg_db: PgDatabase, partition: str
) -> None:
    server = make_server(pg_sink(pg_db, partition=partition))
    server.create_stream("clicks", EVENTS_SCHEMA)
    events = [ev(i, ts=sent) for i, (sent, _) in enumerate(PARTITION_TIMES)]
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    server.ingest("clicks", shuffled[:5])
    server.ingest("clicks", shuffled[5:])
    wait_count(pg_db, "clicks", len(events), server=server)

    kind = pg_db.scalar("SELECT c.relkind FROM pg_class c WHERE c.oid = 'public.clicks'::regclass")
    assert kind == "p", "the stream's table is not partitioned"
    assert pg_db.scalar("SELECT pg_get_partkeydef('public.clicks'::regclass)") == "RANGE (ts)"

    fmt = SUFFIX_FORMATS[partition]
    landed = {n: (schema, name) for n, schema, name in partition_of_rows(pg_db, "public", "clicks")}
    for i, (sent, instant) in enumerate(PARTITION_TIMES):
        assert landed[i] == ("public", f"_clicks_{instant.strftime(fmt)}"), (sent, landed[i])
    stored = dict(pg_db.query("SELECT n, ts FROM public.clicks"))
    assert stored == {i: instant for i, (_, instant) in enumerate(PARTITION_TIMES)}

    names = partitions(pg_db, "public", "clicks")
    assert ("public", "_clicks_default") in names, names
    pattern = {
        "hour": r"\d{4}_\d{2}_\d{2}_\d{2}",
        "day": r"\d{4}_\d{2}_\d{2}",
        "month": r"\d{4}_\d{2}",
    }
    for schema, name in names:
        assert schema == "public", names
        assert re.fullmatch(rf"_clicks_(default|{pattern[partition]})", name), names

    # A late event, far in the past: its own partition or the default one, exactly once.
    late_n = 1000
    server.ingest("clicks", [ev(late_n, ts=LATE[0])])
    wait_count(pg_db, "clicks", len(events) + 1, server=server)
    where = [
        (schema, name)
        for n, schema, name in partition_of_rows(pg_db, "public", "clicks")
        if n == late_n
    ]
    assert where in (
        [("public", f"_clicks_{LATE[1].strftime(fmt)}")],
        [("public", "_clicks_default")],
    ), where
    assert pg_db.scalar("SELECT ts FROM public.clicks WHERE n = %s", (late_n,)) == LATE[1]
    assert pg_db.scalar("SELECT count(*) FROM public.clicks") == len(events) + 1


# =======================================================================================
# (c) exactly once through kill -9


def test_crash_loop_delivers_every_acknowledged_event_exactly_once(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db, pool_size=4) | {"server": {"node_id": "crash-node"}})
    server.create_stream("s", EVENTS_SCHEMA)

    def two_days(ids: list[int]) -> list[dict[str, Any]]:
        # Two days: a batch spreads over two partitions.
        return [ev(i, ts=f"2024-05-0{1 + i % 2}T12:00:00Z") for i in ids]

    acknowledged, sent, kills = crash_loop(
        server, "s", two_days, seed=20241126, max_kills=20, wait=(0.1, 0.9), time_limit=40
    )
    assert kills >= 10, f"only {kills} kills in the time allowed"
    assert len(acknowledged) > 500, "the loop acknowledged too little to mean anything"

    def all_acknowledged_arrived() -> bool:
        return acknowledged <= set(ids(pg_db, "s")) if pg_db.table_exists("public", "s") else False

    wait_for(
        all_acknowledged_arrived, timeout=60, interval=0.2, what="acknowledged events in PostgreSQL"
    )
    wait_all_delivered(server, "s", "postgres", DELIVERY_TIMEOUT)
    final = server.stream_info("s")
    server.stop()

    counts = Counter(ids(pg_db, "s"))
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not twice, f"events inserted more than once: {twice[:20]}"
    assert pg_db.scalar("SELECT count(*) = count(DISTINCT n) FROM public.s") is True
    missing = sorted(acknowledged - counts.keys())
    assert not missing, f"{len(missing)} acknowledged events are missing: {missing[:20]}"
    assert counts.keys() <= sent
    # Events made durable but whose answer was lost to a kill count as accepted too.
    assert sum(counts.values()) == final["accepted"] == final["delivered"]["postgres"], final
    rows = check_ledger_invariants(pg_db)
    assert {(r[0], r[1]) for r in rows} <= {("crash-node", "s")}, rows


# =======================================================================================
# (d) outage: the database goes away while ingesting and comes back


def test_postgres_outage_keeps_ingesting_and_catches_up_exactly_once(
    make_server: Callable[..., Server], pg_db: PgDatabase, pg_cluster: Any
) -> None:
    if pg_cluster.external:
        pytest.skip("needs the private test cluster (it is stopped and started)")
    server = make_server(pg_sink(pg_db))
    server.create_stream("s", EVENTS_SCHEMA)

    def three_days(ids: list[int]) -> list[dict[str, Any]]:
        return [ev(i, ts=f"2024-06-{1 + i % 3:02d}T{i % 24:02d}:00:00Z") for i in ids]

    send = BatchSender(server, "s", three_days)
    acknowledged, codes = send.acknowledged, send.codes

    for _ in range(10):
        send()
    wait_count(pg_db, "s", len(acknowledged), server=server)
    wait_sink_status(server, "postgres", "ok", DELIVERY_TIMEOUT)

    pg_cluster.stop()
    try:
        # Ingestion goes on; the sink turns degraded within a bounded time.
        code, body = send_until_degraded(server, "postgres", send, DELIVERY_TIMEOUT)
        assert code == 200, body  # a degraded sink alone does not make the node unready
        assert body["sinks"]["parquet"] == "ok", body
        # A few seconds of backlog: the sink retries and backs off meanwhile.
        keep_sending(send, 3)
        assert sink_status(server, "postgres") == "degraded"
        assert set(codes) == {200}, codes
    finally:
        pg_cluster.start()

    for _ in range(5):
        send()
    wait_for(
        lambda: acknowledged <= set(ids(pg_db, "s")),
        timeout=60,
        interval=0.2,
        what="every acknowledged event in PostgreSQL after the outage",
    )
    wait_sink_status(server, "postgres", "ok", DELIVERY_TIMEOUT)
    wait_count(pg_db, "s", len(acknowledged), server=server)
    assert pg_db.scalar("SELECT count(DISTINCT n) FROM public.s") == len(acknowledged)
    assert set(codes) == {200}, f"some requests were not acknowledged: {codes}"
    wait_for(
        lambda: server.stream_info("s")["delivered"]["postgres"] == len(acknowledged),
        timeout=DELIVERY_TIMEOUT,
        what="delivered.postgres to count every event",
    )
    check_ledger_invariants(pg_db)


def test_database_down_at_start_does_not_stop_ingestion(
    make_server: Callable[..., Server], pg_db: PgDatabase, pg_cluster: Any
) -> None:
    if pg_cluster.external:
        pytest.skip("needs the private test cluster (it is stopped and started)")
    pg_cluster.stop()
    try:
        server = make_server(pg_sink(pg_db))  # must turn ready without the database
        code, body = readyz(server)
        assert code == 200, body
        server.create_stream("s", EVENTS_SCHEMA)
        server.ingest("s", [ev(i) for i in range(30)])
        wait_sink_status(server, "postgres", "degraded", DELIVERY_TIMEOUT)
        for start in range(30, 130, 10):
            server.ingest("s", [ev(i) for i in range(start, start + 10)])
            time.sleep(0.15)
        assert readyz(server)[0] == 200
        assert sink_status(server, "postgres") == "degraded"
    finally:
        pg_cluster.start()
    wait_count(pg_db, "s", 130, server=server)
    assert sorted(ids(pg_db, "s")) == list(range(130))
    wait_sink_status(server, "postgres", "ok", DELIVERY_TIMEOUT)


# =======================================================================================
# (e) hostile names

HOSTILE_NAMES = [
    'x"; drop table t; --',
    "Robert'); DROP TABLE students;--",
    "a b",
    'a"b',
    "a'b",
    "semi;colon",
    "t; drop table t",
    "Users",
    "UPPER",
    "dash-name",
    "dot.name",
    "ünïcode",
    "x)",
    "",
]


def test_hostile_stream_and_field_names_are_refused_and_touch_nothing(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    pg_db.execute("CREATE TABLE public.t (a int)")
    pg_db.execute("INSERT INTO public.t VALUES (1)")
    pg_db.execute("CREATE TABLE public.students (a int)")
    pg_db.execute("INSERT INTO public.students VALUES (2)")
    server = make_server(pg_sink(pg_db))
    tables_before = set(pg_db.tables("public"))
    schemas_before = pg_db.query("SELECT nspname FROM pg_namespace ORDER BY 1")

    for name in HOSTILE_NAMES:
        if not name:
            continue
        resp = server.request(
            "PUT",
            f"/v1/streams/{quote(name, safe='')}",
            data=json.dumps(EVENTS_SCHEMA),
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 400, (name, resp.status_code, resp.text)
        assert resp.json()["error"] == "invalid_stream_name", (name, resp.text)
        post = server.request(
            "POST",
            f"/v1/streams/{quote(name, safe='')}/events",
            data=ndjson([ev(1)]),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert post.status_code in (400, 404), (name, post.status_code)

    for name in HOSTILE_NAMES:
        if name in ("Users", "UPPER"):
            continue  # valid field names (case is kept): see the reserved-words test
        schema = {
            "fields": [
                {"name": "ts", "type": "timestamp"},
                {"name": name, "type": "string", "nullable": True},
            ],
            "time_field": "ts",
        }
        resp = server.put_stream("ok_stream", schema)
        assert resp.status_code == 400, (name, resp.status_code, resp.text)
    # Hostile enum values are data, not SQL: they end up in a CHECK constraint as literals.
    enum_schema = {
        "fields": [
            {"name": "ts", "type": "timestamp"},
            {"name": "e", "type": "enum", "values": ["a", "x'); DROP TABLE t; --", 'q"q']},
        ],
        "time_field": "ts",
    }
    server.create_stream("enums", enum_schema)
    server.ingest(
        "enums",
        [{"ts": "2024-05-01T00:00:00Z", "e": v} for v in enum_schema["fields"][1]["values"]],
    )
    wait_count(pg_db, "enums", 3, server=server)
    assert sorted(r[0] for r in pg_db.query("SELECT e FROM public.enums")) == sorted(
        enum_schema["fields"][1]["values"]
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        pg_db.execute("INSERT INTO public.enums VALUES ('2024-05-01T00:00:00Z', 'q')")

    assert server.get("/v1/streams").json()["streams"] == [{"name": "enums", "version": 1}]
    assert pg_db.scalar("SELECT a FROM public.t") == 1
    assert pg_db.scalar("SELECT a FROM public.students") == 2
    created = set(pg_db.tables("public")) - tables_before
    allowed = {"_floodway_ledger", "enums"} | {n for n in created if n.startswith("_enums_")}
    assert created <= allowed, created
    assert pg_db.query("SELECT nspname FROM pg_namespace ORDER BY 1") == schemas_before


def test_reserved_words_and_mixed_case_names_are_quoted(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db))
    schema = {
        "fields": [
            {"name": "from", "type": "timestamp"},
            {"name": "select", "type": "int64"},
            {"name": "Group", "type": "string"},
            {"name": "user", "type": "bool", "nullable": True},
            {"name": "_extra_info", "type": "int32", "nullable": True},
        ],
        "time_field": "from",
    }
    for stream in ("order", "user", "table"):
        server.create_stream(stream, schema)
        events = [
            {"from": "2024-05-01T00:00:00Z", "select": i, "Group": f"G{i}", "user": True}
            for i in range(3)
        ]
        server.ingest(stream, events)
    for stream in ("order", "user", "table"):
        wait_count(pg_db, stream, 3, server=server)
        assert [c[0] for c in columns(pg_db, "public", stream)] == [
            "from",
            "select",
            "Group",
            "user",
            "_extra_info",
        ]
        rows = pg_db.query(
            f'SELECT "select", "Group", "user" FROM {qualified("public", stream)} ORDER BY 1'
        )
        assert rows == [(i, f"G{i}", True) for i in range(3)]


# =======================================================================================
# (f) schema addition


def test_nullable_addition_becomes_add_column(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db))
    server.create_stream("s", EVENTS_SCHEMA)
    server.ingest("s", [ev(i, msg=f"m{i}") for i in range(3)])
    wait_count(pg_db, "s", 3, server=server)
    assert [c[0] for c in columns(pg_db, "public", "s")] == ["ts", "n", "msg"]

    extended = {
        **EVENTS_SCHEMA,
        "fields": [
            *EVENTS_SCHEMA["fields"],
            {"name": "note", "type": "string", "nullable": True},
            {"name": "Score", "type": "decimal", "precision": 9, "scale": 3, "nullable": True},
        ],
    }
    resp = server.put_stream("s", extended)
    assert resp.status_code == 200, resp.text
    assert server.stream_info("s")["version"] == 2
    server.ingest("s", [ev(i, note=f"note {i}", Score="12.5") for i in range(3, 6)])
    server.ingest("s", [ev(6, ts="2024-05-09T00:00:00Z")])  # a new partition after the change
    wait_count(pg_db, "s", 7, server=server)
    assert columns(pg_db, "public", "s") == [
        ("ts", "timestamp with time zone", True),
        ("n", "bigint", True),
        ("msg", "text", False),
        ("note", "text", False),
        ("Score", "numeric(9,3)", False),
    ]
    rows = pg_db.query('SELECT n, note, "Score"::text FROM public.s ORDER BY n')
    assert rows == [
        (0, None, None),
        (1, None, None),
        (2, None, None),
        (3, "note 3", "12.500"),
        (4, "note 4", "12.500"),
        (5, "note 5", "12.500"),
        (6, None, None),
    ]
    # Across a restart the table is left as it is and keeps taking the new column.
    server.stop()
    server.restart()
    server.ingest("s", [ev(7, note="after restart")])
    wait_count(pg_db, "s", 8, server=server)
    assert pg_db.scalar("SELECT note FROM public.s WHERE n = 7") == "after restart"
    assert len(columns(pg_db, "public", "s")) == 5


# =======================================================================================
# (g) the password never shows


SECRET = "Hunter2-floodway-Secret"
ENCODED_SECRET = "s%40cr%3At-floodway-pw"  # "s@cr:t-floodway-pw" once decoded


@pytest.mark.parametrize("password", [SECRET, ENCODED_SECRET], ids=["plain", "percent-encoded"])
def test_password_never_appears_in_logs_or_answers(
    make_server: Callable[..., Server], pg_db: PgDatabase, tmp_path: Path, password: str
) -> None:
    # An external server ($FLOODWAY_TEST_POSTGRES_URL) may need its real password.
    real = urlsplit(pg_db.url).password
    if real:
        password = real
    secrets = {password, unquote(password)}
    # Nothing listens on this port: every connection attempt fails.
    dead_port = free_port()
    assert not port_is_open(dead_port)
    bad_url = pg_db.url_with(password=password, port=dead_port)
    failing = make_server(pg_sink(bad_url), extra_args=["--log-level", "debug"])
    failing.create_stream("s", EVENTS_SCHEMA)
    failing.ingest("s", [ev(i) for i in range(5)])
    wait_sink_status(failing, "postgres", "degraded", DELIVERY_TIMEOUT)
    texts = {
        "/readyz": failing.get("/readyz").text,
        "/metrics": failing.get("/metrics").text,
        "stream info": failing.get("/v1/streams/s").text,
    }
    failing.stop()
    texts["the log (connection refused)"] = failing.log(tail=10_000_000)
    # `floodway check` with the same config says nothing about the password either.
    assert failing.config_path is not None
    check = run_cli(["check", "--config", str(failing.config_path)], cwd=tmp_path)
    texts["floodway check"] = check.stdout + check.stderr

    # A reachable server with trust authentication ignores the password: all is delivered.
    good_url = pg_db.url_with(password=password)
    working = make_server(pg_sink(good_url), extra_args=["--log-level", "debug"])
    working.create_stream("s", EVENTS_SCHEMA)
    working.ingest("s", [ev(i) for i in range(5)])
    wait_count(pg_db, "s", 5, server=working)
    working.stop()
    texts["the log (connected)"] = working.log(tail=10_000_000)
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"the password shows in {where}"
    assert "postgres" in texts["the log (connection refused)"].lower(), (
        "the failed connection should be logged (without the password)"
    )


# =======================================================================================
# (h) a configured schema


@pytest.mark.parametrize(
    "schema,exists",
    [("telemetry", True), ("Ops_Data", False)],
    ids=["telemetry-existing", "Ops_Data-created"],
)
def test_configured_schema_holds_tables_partitions_and_ledger(
    make_server: Callable[..., Server], pg_db: PgDatabase, schema: str, exists: bool
) -> None:
    if exists:
        pg_db.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    # else floodway creates it (docs/reference/postgres.md): case kept, quoted.
    server = make_server(pg_sink(pg_db, schema=schema))
    server.create_stream("s", EVENTS_SCHEMA)
    server.ingest("s", [ev(i, ts=f"2024-05-0{1 + i % 3}T10:00:00Z") for i in range(9)])
    wait_count(pg_db, "s", 9, schema=schema, server=server)
    assert sorted(ids(pg_db, "s", schema=schema)) == list(range(9))
    assert pg_db.table_exists(schema, "_floodway_ledger")
    parts = partitions(pg_db, schema, "s")
    assert {p[0] for p in parts} == {schema}, parts
    assert {(schema, f"_s_2024_05_0{d}") for d in (1, 2, 3)} <= set(parts), parts
    assert {r[1] for r in partition_of_rows(pg_db, schema, "s")} == {schema}
    assert pg_db.tables("public") == [], "nothing belongs in public"
    check_ledger_invariants(pg_db, schema)


# =======================================================================================
# (i) counters


def test_delivered_counter_matches_the_table_across_restarts(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db))
    wait_sink_status(server, "postgres", "ok", DELIVERY_TIMEOUT)
    code, body = readyz(server)
    assert code == 200 and body["sinks"] == {"parquet": "ok", "postgres": "ok"}, body
    server.create_stream("s", EVENTS_SCHEMA)
    info = server.stream_info("s")
    assert info["delivered"] == {"parquet": 0, "postgres": 0}, info

    for start in range(0, 250, 50):
        server.ingest(
            "s", [ev(i, ts=f"2024-05-0{1 + i % 2}T00:00:00Z") for i in range(start, start + 50)]
        )
    wait_count(pg_db, "s", 250, server=server)

    def delivered_is(n: int) -> bool:
        return server.stream_info("s")["delivered"]["postgres"] == n

    wait_for(lambda: delivered_is(250), timeout=10, what="delivered.postgres == 250")
    wait_for(lambda: sink_events(server, "postgres", "s") == 250, timeout=10, what="metric == 250")

    server.stop()
    server.restart()
    assert delivered_is(250), server.stream_info("s")
    server.ingest("s", [ev(i) for i in range(250, 300)])
    wait_count(pg_db, "s", 300, server=server)
    wait_for(lambda: delivered_is(300), timeout=10, what="delivered.postgres == 300")

    server.kill()
    server.restart()
    wait_for(
        lambda: delivered_is(300),
        timeout=DELIVERY_TIMEOUT,
        what="delivered.postgres == 300 after kill -9",
    )
    assert pg_db.count("public", "s") == 300
    assert pg_db.scalar("SELECT count(DISTINCT n) FROM public.s") == 300
    wait_for(lambda: sink_events(server, "postgres", "s") is not None, timeout=10, what="metric")


# =======================================================================================
# (j) unknown fields


def test_unknown_fields_keep_goes_to_extra_jsonb(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db))
    server.create_stream("kept", {**EVENTS_SCHEMA, "unknown_fields": "keep"})
    server.create_stream("dropped", {**EVENTS_SCHEMA, "unknown_fields": "drop"})
    extras = [
        {"extra1": 1, "nested": {"a": [1, 2, None], "ü": "ö"}},
        {"flag": True, "s": "x'); DROP TABLE kept; --"},
        {},
    ]
    server.ingest("kept", [ev(i, **extra) for i, extra in enumerate(extras)])
    server.ingest("dropped", [ev(i, **extra) for i, extra in enumerate(extras)])
    wait_count(pg_db, "kept", 3, server=server)
    wait_count(pg_db, "dropped", 3, server=server)

    assert columns(pg_db, "public", "kept") == [
        ("ts", "timestamp with time zone", True),
        ("n", "bigint", True),
        ("msg", "text", False),
        ("_extra", "jsonb", False),
    ]
    assert [c[0] for c in columns(pg_db, "public", "dropped")] == ["ts", "n", "msg"]
    stored = dict(pg_db.query("SELECT n, _extra FROM public.kept"))
    assert stored[0] == extras[0]
    assert stored[1] == extras[1]
    assert stored[2] in (None, {}), stored[2]
    for i in (0, 1):
        same = pg_db.scalar(
            "SELECT _extra = %s::jsonb FROM public.kept WHERE n = %s", (json.dumps(extras[i]), i)
        )
        assert same is True


# =======================================================================================
# (k) several streams, several nodes


def test_two_streams_of_one_node_keep_separate_tables(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db) | {"server": {"node_id": "node-a"}})
    server.create_stream("alpha", EVENTS_SCHEMA)
    server.create_stream(
        "beta",
        {
            "fields": [
                {"name": "at", "type": "timestamp"},
                {"name": "name", "type": "string"},
                {"name": "v", "type": "float64"},
            ],
            "time_field": "at",
        },
    )
    for i in range(7):
        server.ingest("alpha", [ev(i)])
        if i < 4:
            server.ingest(
                "beta",
                [
                    {"at": "2024-05-02T00:00:00Z", "name": f"b{j}", "v": j / 2}
                    for j in range(i * 3, i * 3 + 3)
                ],
            )
    wait_count(pg_db, "alpha", 7, server=server)
    wait_count(pg_db, "beta", 12, server=server)
    assert sorted(ids(pg_db, "alpha")) == list(range(7))
    assert sorted(r[0] for r in pg_db.query("SELECT name FROM public.beta")) == sorted(
        f"b{j}" for j in range(12)
    )
    assert [c[0] for c in columns(pg_db, "public", "beta")] == ["at", "name", "v"]
    assert pg_db.scalar("SELECT pg_get_partkeydef('public.beta'::regclass)") == "RANGE (at)"
    assert all(name.startswith("_alpha_") for _, name in partitions(pg_db, "public", "alpha"))
    assert all(name.startswith("_beta_") for _, name in partitions(pg_db, "public", "beta"))
    rows = check_ledger_invariants(pg_db)
    assert {(r[0], r[1]) for r in rows} <= {("node-a", "alpha"), ("node-a", "beta")}, rows


def test_two_nodes_write_one_table_without_deduplicating_each_other(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    # Both WALs start at the same positions: only the node_id tells their batches apart.
    node_a = make_server(pg_sink(pg_db) | {"server": {"node_id": "node-a"}})
    node_b = make_server(pg_sink(pg_db) | {"server": {"node_id": "node-b"}})
    for node in (node_a, node_b):
        node.create_stream("s", EVENTS_SCHEMA)
    for i in range(5):
        node_a.ingest("s", [ev(i * 10 + j) for j in range(10)])
        node_b.ingest("s", [ev(1000 + i * 10 + j) for j in range(10)])
    wait_count(pg_db, "s", 100, server=node_b)
    assert sorted(ids(pg_db, "s")) == list(range(50)) + list(range(1000, 1050))
    rows = check_ledger_invariants(pg_db)
    assert {r[0] for r in rows} <= {"node-a", "node-b"}, rows


# =======================================================================================
# configuration


@pytest.mark.parametrize(
    "settings,key",
    [
        ({"url": "postgres://postgres@127.0.0.1:5432/db", "partition": "week"}, "partition"),
        ({"url": "postgres://postgres@127.0.0.1:5432/db", "schema": 'bad"; drop'}, "schema"),
        ({"url": "postgres://postgres@127.0.0.1:5432/db", "pool_size": 0}, "pool_size"),
        ({"url": "mysql://127.0.0.1/db"}, "url"),
        ({"partition": "day"}, "url"),
    ],
    ids=["partition", "schema", "pool-size", "url-scheme", "url-missing"],
)
def test_check_rejects_bad_postgres_settings(
    tmp_path: Path, settings: dict[str, Any], key: str
) -> None:
    path = tmp_path / "floodway.toml"
    path.write_text(to_toml({"sinks": {"postgres": settings}}))
    result = run_cli(["check", "--config", str(path)], cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert f"sinks.postgres.{key}" in result.stderr or key in result.stderr, result.stderr


# =======================================================================================
# documented details (docs/reference/postgres.md)


def test_nul_characters_become_replacement_characters_in_postgres_only(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    server = make_server(pg_sink(pg_db))
    schema = {
        "fields": [
            {"name": "ts", "type": "timestamp"},
            {"name": "n", "type": "int64"},
            {"name": "s", "type": "string"},
            {"name": "j", "type": "json"},
        ],
        "time_field": "ts",
    }
    server.create_stream("s", schema)
    server.ingest("s", [ev(1, s="a\u0000b", j={"k\u0000": ["x\u0000y", 1]})])
    wait_count(pg_db, "s", 1, server=server)
    row = pg_db.query("SELECT s, j FROM public.s")[0]
    assert row == ("a\ufffdb", {"k\ufffd": ["x\ufffdy", 1]}), row
    server.stop()
    parquet = server.rows("s")
    assert [r["s"] for r in parquet] == ["a\u0000b"], parquet


def test_json_numbers_postgres_cannot_hold_do_not_stop_the_sink(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    """jsonb keeps numbers as numeric (at most 131072 digits before the point and 16383
    after): larger ones are written as strings of the same text, and later events flow."""
    server = make_server(pg_sink(pg_db))
    schema = {
        "fields": [
            {"name": "ts", "type": "timestamp"},
            {"name": "n", "type": "int64"},
            {"name": "j", "type": "json"},
        ],
        "time_field": "ts",
        "unknown_fields": "keep",
    }
    server.create_stream("s", schema)
    body = (
        '{"ts":"2024-05-01T12:00:00Z","n":1,"j":{"big":1e1000000,"tiny":-5e-20000,"ok":1.5},'
        '"other":[2E200000]}\n'
        '{"ts":"2024-05-01T12:00:00Z","n":2,"j":"1e1000000"}\n'
    )
    resp = server.post_events("s", body)
    assert resp.status_code == 200 and resp.json()["accepted"] == 2, resp.text
    server.ingest("s", [ev(3, j=[1, 2])])
    wait_count(pg_db, "s", 3, server=server)
    rows = dict(pg_db.query('SELECT n, j FROM public.s'))
    assert rows[1] == {"big": "1e1000000", "tiny": "-5e-20000", "ok": 1.5}, rows
    assert rows[2] == "1e1000000" and rows[3] == [1, 2], rows
    assert pg_db.scalar('SELECT "_extra" FROM public.s WHERE n = 1') == {"other": ["2E200000"]}
    assert sink_status(server, "postgres") == "ok"
    server.stop()
    parquet = {r["n"]: r["j"] for r in server.rows("s")}
    assert "1e1000000" in parquet[1] and '"big"' in parquet[1], parquet  # Parquet keeps the text


def test_longest_stream_name_gets_partitions_within_postgres_limits(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    stream = "s" + "x" * 62  # 63 characters: "_{stream}_YYYY_MM_DD_HH" would be 78 bytes
    server = make_server(pg_sink(pg_db, partition="hour"))
    server.create_stream(stream, EVENTS_SCHEMA)
    server.ingest(stream, [ev(1, ts="2024-05-01T10:00:00Z"), ev(2, ts="2024-05-01T11:00:00Z")])
    wait_count(pg_db, stream, 2, server=server)
    landed = {n: name for n, _, name in partition_of_rows(pg_db, "public", stream)}
    assert landed[1] != landed[2], landed
    for name in landed.values():
        assert len(name.encode()) <= 63 and name.startswith("_sxxxxx"), landed
    names = [name for _, name in partitions(pg_db, "public", stream)]
    assert len(set(names)) == len(names), names


def test_fresh_data_dir_with_a_used_node_id_refuses_to_deliver(
    make_server: Callable[..., Server], pg_db: PgDatabase
) -> None:
    config = pg_sink(pg_db) | {"server": {"node_id": "twin"}}
    first = make_server(config)
    first.create_stream("s", EVENTS_SCHEMA)
    first.ingest("s", [ev(i) for i in range(5)])
    wait_count(pg_db, "s", 5, server=first)
    first.stop()
    # (Rows behind the checkpoint are pruned every ten seconds or so: this node lived less.)
    assert pg_db.scalar("SELECT count(*) FROM public._floodway_ledger WHERE node_id = 'twin'") > 0

    # Another data dir, the same node_id: its WAL positions would be taken for the first's.
    second = make_server(config)
    second.create_stream("s", EVENTS_SCHEMA)
    second.ingest("s", [ev(i) for i in range(100, 103)])
    wait_sink_status(second, "postgres", "degraded", DELIVERY_TIMEOUT)
    assert pg_db.count("public", "s") == 5
    assert sorted(ids(pg_db, "s")) == list(range(5))

    # The documented way out when the first node's data is gone: delete its ledger rows.
    pg_db.execute("DELETE FROM public._floodway_ledger WHERE node_id = 'twin'")
    wait_count(pg_db, "s", 8, server=second)
    assert sorted(ids(pg_db, "s")) == [*range(5), 100, 101, 102]
    wait_sink_status(second, "postgres", "ok", DELIVERY_TIMEOUT)
