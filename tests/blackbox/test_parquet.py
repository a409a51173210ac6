"""SPEC §6 Parquet output: Hive layout by UTC time, column types, metadata, commits."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from harness import SIMPLE_SCHEMA, Server, event, normalize_column, wait_for

UTC = dt.UTC

ALL_TYPES_SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "ts", "type": "timestamp"},
        {"name": "b", "type": "bool"},
        {"name": "i32", "type": "int32"},
        {"name": "i64", "type": "int64"},
        {"name": "f", "type": "float64"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": "enum", "values": ["debug", "info", "warn", "error"]},
        {"name": "d", "type": "date"},
        {"name": "dec", "type": "decimal", "precision": 18, "scale": 4},
        {"name": "u", "type": "uuid"},
        {"name": "j", "type": "json"},
        {"name": "opt", "type": "string", "nullable": True},
    ],
    "time_field": "ts",
}

# (ts as sent, the same instant in UTC)
TIMES = [
    ("2024-12-31T22:30:00Z", dt.datetime(2024, 12, 31, 22, 30, tzinfo=UTC)),
    ("2024-12-31T23:59:59.999999Z", dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2025-01-01T02:15:00+03:00", dt.datetime(2024, 12, 31, 23, 15, tzinfo=UTC)),
    ("2025-01-01T00:00:00Z", dt.datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
    ("2025-01-01T05:06:07.5-02:00", dt.datetime(2025, 1, 1, 7, 6, 7, 500000, tzinfo=UTC)),
    ("2025-01-01T01:00:00.000001Z", dt.datetime(2025, 1, 1, 1, 0, 0, 1, tzinfo=UTC)),
]


def all_types_event(i: int, ts: str) -> dict[str, Any]:
    return {
        "ts": ts,
        "b": i % 2 == 0,
        "i32": -i,
        "i64": 10**15 + i,
        "f": i + 0.25,
        "s": f"row {i} ✓",
        "e": ["debug", "info", "warn", "error"][i % 4],
        "d": f"2024-02-{10 + i:02d}",
        "dec": f"{i + 1}1234.5678",
        "u": str(uuid.UUID(int=i + 1)),
        "j": {"i": i, "tags": ["a", i]},
        "opt": None if i % 2 else f"o{i}",
    }


def micros(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)


def test_dataset_layout_types_and_values(server: Server) -> None:
    server.create_stream("all", ALL_TYPES_SCHEMA)
    events = [all_types_event(i, ts) for i, (ts, _) in enumerate(TIMES)]
    server.ingest("all", events)
    server.stop()

    root = server.stream_dir("all")
    files = server.parquet_files("all")
    assert files, f"no Parquet files under {root}"
    for path in files:
        rel = path.relative_to(root).parts
        assert len(rel) == 3, path
        assert re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", rel[0]), path
        assert re.fullmatch(r"hour=\d{2}", rel[1]), path
        assert re.fullmatch(r"part-.*\.parquet", rel[2]), path
    partitions = {p.relative_to(root).parts[:2] for p in files}
    assert partitions == {
        ("date=2024-12-31", "hour=22"),
        ("date=2024-12-31", "hour=23"),
        ("date=2025-01-01", "hour=00"),
        ("date=2025-01-01", "hour=01"),
        ("date=2025-01-01", "hour=07"),
    }

    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(TIMES)
    cols = {name: normalize_column(table.column(name)) for name in table.column_names}
    rows = [{name: cols[name][k] for name in cols} for k in range(table.num_rows)]
    rows.sort(key=lambda r: -r["i32"])
    for i, row in enumerate(rows):
        sent = events[i]
        utc = TIMES[i][1]
        assert row["ts"] == micros(utc), (row["ts"], utc)
        assert str(row["date"]) == utc.strftime("%Y-%m-%d"), row
        assert int(row["hour"]) == utc.hour, row
        assert row["b"] is sent["b"]
        assert row["i32"] == sent["i32"] and row["i64"] == sent["i64"]
        assert row["f"] == sent["f"]
        assert row["s"] == sent["s"] and row["e"] == sent["e"]
        assert row["d"] == dt.date.fromisoformat(sent["d"])
        assert row["dec"] == Decimal(sent["dec"])
        assert row["u"] == uuid.UUID(sent["u"]).bytes
        assert json.loads(row["j"]) == sent["j"]
        assert row["opt"] == sent["opt"]


def test_column_types_and_metadata(server: Server) -> None:
    server.create_stream("all", ALL_TYPES_SCHEMA)
    server.ingest("all", [all_types_event(i, "2025-01-01T00:00:00Z") for i in range(8)])
    server.stop()
    files = server.parquet_files("all")
    assert files
    for path in files:
        pf = pq.ParquetFile(path)
        arrow = pf.schema_arrow
        assert arrow.field("b").type == pa.bool_()
        assert arrow.field("i32").type == pa.int32()
        assert arrow.field("i64").type == pa.int64()
        assert arrow.field("f").type == pa.float64()
        assert arrow.field("s").type == pa.string()
        assert arrow.field("j").type == pa.string()
        enum_type = arrow.field("e").type
        assert enum_type == pa.string() or (
            pa.types.is_dictionary(enum_type) and enum_type.value_type == pa.string()
        ), enum_type
        assert arrow.field("ts").type == pa.timestamp("us", tz="UTC")
        assert arrow.field("d").type == pa.date32()
        assert arrow.field("dec").type == pa.decimal128(18, 4)
        u_type = arrow.field("u").type
        assert u_type == pa.binary(16) or (
            isinstance(u_type, pa.BaseExtensionType) and u_type.extension_name == "arrow.uuid"
        ), u_type
        assert arrow.field("opt").nullable

        schema = pf.schema
        index = {schema.column(i).name: i for i in range(len(schema))}

        def logical(name: str) -> str:
            return str(schema.column(index[name]).logical_type)

        def physical(name: str) -> str:
            return str(schema.column(index[name]).physical_type)

        assert physical("b") == "BOOLEAN"
        assert physical("i32") == "INT32"
        assert physical("i64") == "INT64"
        assert physical("f") == "DOUBLE"
        for name in ["s", "e", "j"]:
            assert physical(name) == "BYTE_ARRAY" and logical(name) == "String", name
        ts_logical = logical("ts")
        assert ts_logical.startswith("Timestamp(") and "isAdjustedToUTC=true" in ts_logical
        assert "timeUnit=microseconds" in ts_logical, ts_logical
        assert logical("d") == "Date"
        assert logical("dec") == "Decimal(precision=18, scale=4)"
        assert physical("u") == "FIXED_LEN_BYTE_ARRAY" and logical("u") == "UUID"

        meta = pf.metadata
        kv = meta.metadata or {}
        assert kv.get(b"floodway.stream") == b"all", kv.keys()
        assert kv.get(b"floodway.schema_version") == b"1", kv.get(b"floodway.schema_version")
        for rg in range(meta.num_row_groups):
            chunk = meta.row_group(rg).column(index["e"])
            assert any("DICTIONARY" in enc for enc in chunk.encodings), chunk.encodings
            for c in range(meta.num_columns):
                assert meta.row_group(rg).column(c).compression == "ZSTD"


def test_no_in_progress_files_remain_after_stop(server: Server) -> None:
    server.create_stream("s")
    hours = [f"2024-05-01T{h:02d}:30:00Z" for h in range(6)]
    for h, ts in enumerate(hours):
        server.ingest("s", [event(h * 10 + k, ts=ts) for k in range(3)])
    server.stop()
    root = server.stream_dir("s")
    leftovers = [p for p in root.rglob("*") if p.name.startswith(("_", "."))]
    assert leftovers == [], leftovers
    assert len(server.rows("s")) == 18
    assert len({p.parent for p in server.parquet_files("s")}) == 6


def test_max_rows_splits_files(make_server: Callable[..., Server]) -> None:
    server = make_server({"sinks": {"parquet": {"max_rows": 10, "max_age": "1h"}}})
    server.create_stream("s")
    server.ingest("s", [event(i) for i in range(25)])
    server.stop()
    files = server.parquet_files("s")
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in files]
    assert sum(sizes) == 25, sizes
    assert len(files) >= 3 and max(sizes) <= 10, sizes
    assert sorted(r["n"] for r in server.rows("s")) == list(range(25))


def test_max_rows_commits_while_running(make_server: Callable[..., Server]) -> None:
    server = make_server({"sinks": {"parquet": {"max_rows": 10, "max_age": "1h"}}})
    server.create_stream("s")
    server.ingest("s", [event(i) for i in range(10)])
    files = wait_for(lambda: server.parquet_files("s"), timeout=10, what="a committed file")
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in files) == 10


def test_max_age_commits_while_running(server: Server) -> None:
    server.create_stream("s")
    server.ingest("s", [event(1), event(2)])
    wait_for(lambda: len(server.rows("s")) == 2, timeout=10, what="2 rows committed")
    assert server.running()


def test_schema_version_in_metadata_follows_changes(server: Server) -> None:
    server.create_stream("s")
    server.ingest("s", [event(1)])
    wait_for(lambda: server.parquet_files("s"), timeout=10, what="first file committed")
    new_field = {"name": "x", "type": "bool", "nullable": True}
    v2 = {**SIMPLE_SCHEMA, "fields": [*SIMPLE_SCHEMA["fields"], new_field]}
    assert server.put_stream("s", v2).status_code == 200
    server.ingest("s", [event(2, x=True)])
    server.stop()
    versions = {}
    for path in server.parquet_files("s"):
        pf = pq.ParquetFile(path)
        kv = pf.metadata.metadata or {}
        names = pf.schema_arrow.names
        for n in pf.read().column("n").to_pylist():
            versions[n] = (kv.get(b"floodway.schema_version"), "x" in names)
    assert versions == {1: (b"1", False), 2: (b"2", True)}, versions


def test_dataset_readable_as_a_whole(server: Server) -> None:
    server.create_stream("a")
    server.create_stream("b")
    server.ingest("a", [event(i, ts=f"2024-05-0{1 + i % 3}T0{i % 4}:00:00Z") for i in range(12)])
    server.ingest("b", [event(100)])
    server.stop()
    table = ds.dataset(server.stream_dir("a"), format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("n").to_pylist()) == list(range(12))
    whole = ds.dataset(server.parquet_root, format="parquet", partitioning=None)
    assert whole.count_rows() == 13
