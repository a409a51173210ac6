"""SPEC §3 streams API: create, identical re-PUT, nullable additions, conflicts, bad schemas."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import SIMPLE_SCHEMA, TS, Server, event, ndjson, wait_for

BENCH_SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "ts", "type": "timestamp"},
        {"name": "service", "type": "string", "max_length": 128},
        {"name": "host", "type": "string", "max_length": 128},
        {"name": "level", "type": "enum", "values": ["debug", "info", "warn", "error"]},
        {"name": "latency_ms", "type": "float64", "min": 0},
        {"name": "status", "type": "int32", "min": 100, "max": 599},
        {"name": "bytes", "type": "int64", "min": 0},
        {"name": "trace_id", "type": "string", "pattern": "^[0-9a-f]{32}$"},
        {"name": "msg", "type": "string", "nullable": True},
    ],
    "time_field": "ts",
    "unknown_fields": "reject",
    "on_invalid": "reject_line",
}

BENCH_EVENT = {
    "ts": TS,
    "service": "api",
    "host": "web-1",
    "level": "info",
    "latency_ms": 12.5,
    "status": 200,
    "bytes": 5120,
    "trace_id": "0123456789abcdef0123456789abcdef",
    "msg": "GET /",
}


def error_of(resp: requests.Response, status: int, code: str) -> str:
    assert resp.status_code == status, f"expected {status}, got {resp.status_code} {resp.text}"
    body = resp.json()
    assert body.get("error") == code, body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return str(body["detail"])


def with_fields(*extra: dict[str, Any], base: dict[str, Any] = SIMPLE_SCHEMA) -> dict[str, Any]:
    schema = copy.deepcopy(base)
    schema["fields"].extend(extra)
    return schema


def reorder_keys(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reorder_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder_keys(v) for v in value]
    return value


def test_put_creates_then_identical_is_200(server: Server) -> None:
    created = server.put_stream("s", BENCH_SCHEMA)
    assert created.status_code == 201, created.text
    info = server.stream_info("s")
    assert info["name"] == "s" and info["version"] == 1, info
    assert (info["accepted"], info["rejected"]) == (0, 0), info
    assert info["delivered"] == {"parquet": 0}, info

    again = server.put_stream("s", BENCH_SCHEMA)
    assert again.status_code == 200, again.text
    reordered = reorder_keys(BENCH_SCHEMA)
    assert json.dumps(reordered) != json.dumps(BENCH_SCHEMA)
    same = server.put_stream("s", reordered)
    assert same.status_code == 200, same.text
    assert server.stream_info("s")["version"] == 1


def test_get_stream_returns_schema(server: Server) -> None:
    server.create_stream("s", BENCH_SCHEMA)
    info = server.stream_info("s")
    schema = info["schema"]
    assert [f["name"] for f in schema["fields"]] == [f["name"] for f in BENCH_SCHEMA["fields"]]
    by_name = {f["name"]: f for f in schema["fields"]}
    assert by_name["level"]["type"] == "enum"
    assert by_name["level"]["values"] == ["debug", "info", "warn", "error"]
    assert by_name["status"]["min"] == 100 and by_name["status"]["max"] == 599
    assert by_name["trace_id"]["pattern"] == "^[0-9a-f]{32}$"
    assert by_name["msg"].get("nullable") is True
    assert schema["time_field"] == "ts"


def test_nullable_addition_bumps_version(server: Server) -> None:
    server.create_stream("s")
    server.ingest("s", [event(1)])
    added = with_fields({"name": "extra", "type": "string", "nullable": True})
    resp = server.put_stream("s", added)
    assert resp.status_code == 200, resp.text
    info = server.stream_info("s")
    assert info["version"] == 2, info
    assert "extra" in [f["name"] for f in info["schema"]["fields"]]
    # Identical to the new version: 200, version unchanged.
    assert server.put_stream("s", added).status_code == 200
    assert server.stream_info("s")["version"] == 2
    # A second addition: version 3; the new field takes values.
    added2 = with_fields(
        {"name": "extra", "type": "string", "nullable": True},
        {"name": "more", "type": "int32", "nullable": True},
    )
    assert server.put_stream("s", added2).status_code == 200
    assert server.stream_info("s")["version"] == 3
    server.ingest("s", [event(2, extra="e", more=7)])
    server.stop()
    rows = {r["n"]: r for r in server.rows("s")}
    assert rows[2]["extra"] == "e" and rows[2]["more"] == 7, rows


@pytest.mark.parametrize(
    "change",
    ["type-change", "remove-field", "add-non-nullable", "nullable-to-required", "option-change"],
)
def test_incompatible_change_is_409(server: Server, change: str) -> None:
    server.create_stream("s")
    schema = copy.deepcopy(SIMPLE_SCHEMA)
    if change == "type-change":
        schema["fields"][1]["type"] = "int32"
    elif change == "remove-field":
        schema["fields"] = [f for f in schema["fields"] if f["name"] != "msg"]
    elif change == "add-non-nullable":
        schema["fields"].append({"name": "req", "type": "string"})
    elif change == "nullable-to-required":
        schema["fields"][2]["nullable"] = False
    elif change == "option-change":
        schema["fields"][1]["min"] = 0
    error_of(server.put_stream("s", schema), 409, "schema_conflict")
    info = server.stream_info("s")
    assert info["version"] == 1, info
    assert info["schema"]["fields"][1]["type"] == "int64"
    assert len(info["schema"]["fields"]) == 3


def ts_field(**kw: Any) -> dict[str, Any]:
    return {"name": "ts", "type": "timestamp", **kw}


def one(field: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A schema with the time field `ts` and `field`."""
    return {"fields": [ts_field(), field], "time_field": "ts", **top}


BAD_SCHEMAS: list[tuple[str, dict[str, Any], list[str]]] = [
    # (id, schema, words of which at least one must be in `detail`)
    ("bad-field-name", one({"name": "9x", "type": "int32"}), ["9x"]),
    ("field-name-hyphen", one({"name": "a-b", "type": "int32"}), ["a-b"]),
    ("field-name-too-long", one({"name": "a" * 64, "type": "int32"}), ["a" * 64]),
    (
        "duplicate-field",
        {
            "fields": [ts_field(), {"name": "x", "type": "int32"}, {"name": "x", "type": "int64"}],
            "time_field": "ts",
        },
        ["x"],
    ),
    ("duplicate-time-field", one(ts_field()), ["ts"]),
    ("unknown-type", one({"name": "x", "type": "int128"}), ["x"]),
    ("missing-type", one({"name": "x"}), ["x"]),
    ("unknown-option", one({"name": "x", "type": "int32", "maxx": 3}), ["x", "maxx"]),
    (
        "option-of-other-type",
        one({"name": "x", "type": "int32", "max_length": 3}),
        ["x", "max_length"],
    ),
    ("enum-without-values", one({"name": "x", "type": "enum"}), ["x"]),
    ("enum-empty-values", one({"name": "x", "type": "enum", "values": []}), ["x"]),
    (
        "scale-above-precision",
        one({"name": "x", "type": "decimal", "precision": 4, "scale": 5}),
        ["x"],
    ),
    (
        "precision-above-38",
        one({"name": "x", "type": "decimal", "precision": 39, "scale": 2}),
        ["x"],
    ),
    (
        "unknown-epoch-unit",
        one({"name": "x", "type": "timestamp", "epoch_unit": "minutes"}),
        ["x"],
    ),
    ("bad-pattern", one({"name": "x", "type": "string", "pattern": "([a-z"}), ["x"]),
    ("time-field-absent", {"fields": [ts_field()]}, ["time_field"]),
    ("time-field-unknown", {"fields": [ts_field()], "time_field": "when"}, ["time_field", "when"]),
    (
        "time-field-nullable",
        {"fields": [ts_field(nullable=True)], "time_field": "ts"},
        ["time_field", "ts"],
    ),
    (
        "time-field-not-timestamp",
        {"fields": [{"name": "ts", "type": "string"}], "time_field": "ts"},
        ["time_field", "ts"],
    ),
    (
        "bad-unknown-fields",
        {"fields": [ts_field()], "time_field": "ts", "unknown_fields": "ignore"},
        ["unknown_fields"],
    ),
    (
        "bad-on-invalid",
        {"fields": [ts_field()], "time_field": "ts", "on_invalid": "skip"},
        ["on_invalid"],
    ),
    (
        "unknown-top-level-key",
        {"fields": [ts_field()], "time_field": "ts", "partition": "day"},
        ["partition"],
    ),
]


@pytest.mark.parametrize(
    "schema,words", [(s, w) for _, s, w in BAD_SCHEMAS], ids=[i for i, _, _ in BAD_SCHEMAS]
)
def test_bad_schema_is_400(server: Server, schema: dict[str, Any], words: list[str]) -> None:
    detail = error_of(server.put_stream("s", schema), 400, "invalid_schema")
    assert any(w in detail for w in words), f"detail {detail!r} names none of {words}"
    assert server.get("/v1/streams/s").status_code == 404


def test_schema_body_not_json_is_400(server: Server) -> None:
    resp = server.put_stream("s", b'{"fields": [')
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] in ("invalid_schema", "invalid_body")


@pytest.mark.parametrize("name", ["Bad", "9abc", "_abc", "a-b", "a.b", "a" * 64, "ab%C3%A9"])
def test_bad_stream_name_is_400(server: Server, name: str) -> None:
    error_of(server.put_stream(name, SIMPLE_SCHEMA), 400, "invalid_stream_name")


def test_longest_stream_name_is_accepted(server: Server) -> None:
    name = "a" + "b_9" * 20 + "zz"
    assert len(name) == 63
    assert server.put_stream(name, SIMPLE_SCHEMA).status_code == 201
    assert server.stream_info(name)["name"] == name
    assert server.ingest(name, [event(1)])["accepted"] == 1


def test_list_and_get_streams(server: Server) -> None:
    assert server.get("/v1/streams").json() == {"streams": []}
    server.create_stream("alpha")
    server.create_stream("beta")
    server.put_stream("beta", with_fields({"name": "x", "type": "bool", "nullable": True}))
    listed = server.get("/v1/streams").json()["streams"]
    assert sorted((s["name"], s["version"]) for s in listed) == [("alpha", 1), ("beta", 2)]
    resp = server.get("/v1/streams/gamma")
    error_of(resp, 404, "stream_not_found")


def test_counters_in_stream_info(server: Server) -> None:
    server.create_stream("s")
    body = ndjson([event(1), event(2), {"ts": TS, "n": "x"}])
    assert server.post_events("s", body).status_code == 200
    info = server.stream_info("s")
    assert (info["accepted"], info["rejected"]) == (2, 1), info
    # max_age is 1s in tests: the rows reach a committed Parquet file on their own.
    wait_for(
        lambda: server.stream_info("s")["delivered"]["parquet"] == 2,
        timeout=15,
        interval=0.1,
        what="delivered.parquet == 2",
    )
    assert len(server.rows("s")) == 2


def test_streams_from_config_with_relative_schema_file(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "schemas").mkdir(parents=True)
    (conf_dir / "schemas" / "bench.json").write_text(json.dumps(BENCH_SCHEMA))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = make_server(
        {"streams": [{"name": "bench", "schema_file": "schemas/bench.json"}]},
        config_path=conf_dir / "floodway.toml",
        cwd=elsewhere,
    )
    info = server.stream_info("bench")
    assert info["version"] == 1
    assert [f["name"] for f in info["schema"]["fields"]] == [
        f["name"] for f in BENCH_SCHEMA["fields"]
    ]
    assert [s["name"] for s in server.get("/v1/streams").json()["streams"]] == ["bench"]
    resp = server.post_events("bench", ndjson([BENCH_EVENT, {**BENCH_EVENT, "status": 700}]))
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (1, 1), body
    assert body["errors"][0]["field"] == "status"
    # Restarting with the same config keeps the stream at version 1.
    server.stop()
    server.restart()
    assert server.stream_info("bench")["version"] == 1
    assert server.stream_info("bench")["accepted"] == 1
