"""SPEC §4 ingestion: body framing, error entries, encodings, limits and status codes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
import zstandard

from harness import TS, Server, event, ndjson


def assert_error(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    """`resp` is `status` with the JSON error body {"error": code, "detail": text}."""
    assert resp.status_code == status, (
        f"expected {status} {code}, got {resp.status_code} {resp.text}"
    )
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert body.get("error") == code, body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body


def counts(resp: requests.Response) -> tuple[int, int]:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    body = resp.json()
    return body["accepted"], body["rejected"]


def sized_ndjson(size: int) -> bytes:
    """Valid NDJSON of exactly `size` bytes: 1000-byte lines, the last one takes the rest."""
    lines = []
    remaining = size
    n = 0
    while remaining > 0:
        n += 1
        want = 1000 if remaining >= 1200 else remaining
        pad = want - len(json.dumps(event(n, msg="")).encode()) - 1
        assert pad >= 0, f"cannot make {size} bytes of NDJSON"
        lines.append(json.dumps(event(n, msg="x" * pad)).encode() + b"\n")
        remaining -= want
    body = b"".join(lines)
    assert len(body) == size
    return body


# -- NDJSON framing ----------------------------------------------------------------------


def test_ndjson_physical_line_numbers_blank_lines_crlf_and_no_final_newline(
    server: Server,
) -> None:
    server.create_stream("s")
    lines = [
        "",  # 1: blank, ignored but counted
        json.dumps(event(1)) + "\r",  # 2: valid, CRLF line end
        "",  # 3: blank
        json.dumps({"ts": TS, "n": "x"}),  # 4: invalid field
        "[1, 2]",  # 5: not an object
        '{"ts": "2024-05-01T12:00:00Z", "n": 3',  # 6: invalid JSON
        "",  # 7: blank
        '"just a string"',  # 8: not an object
        json.dumps(event(2, msg="last line")),  # 9: valid, no final newline
    ]
    resp = server.post_events("s", "\n".join(lines))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == 2, body
    assert body["rejected"] == 4, body
    assert [e["line"] for e in body["errors"]] == [4, 5, 6, 8], body
    by_line = {e["line"]: e for e in body["errors"]}
    assert by_line[4]["field"] == "n"
    assert "field" not in by_line[6], by_line[6]
    for entry in body["errors"]:
        assert isinstance(entry["reason"], str) and entry["reason"], entry
        assert "index" not in entry, entry
    server.stop()
    rows = sorted(server.rows("s"), key=lambda r: r["n"])
    assert [(r["n"], r["msg"]) for r in rows] == [(1, None), (2, "last line")]


def test_ndjson_crlf_everywhere(server: Server) -> None:
    server.create_stream("s")
    body = "\r\n".join(json.dumps(event(i, msg=f"m{i}")) for i in range(5)) + "\r\n"
    assert counts(server.post_events("s", body)) == (5, 0)
    server.stop()
    assert sorted(r["msg"] for r in server.rows("s")) == [f"m{i}" for i in range(5)]


@pytest.mark.parametrize("line", ["42", "null", "true", "[]", '"text"'])
def test_ndjson_non_object_line_is_one_rejected_event(server: Server, line: str) -> None:
    server.create_stream("s")
    resp = server.post_events("s", json.dumps(event(1)) + "\n" + line + "\n")
    assert counts(resp) == (1, 1)
    assert resp.json()["errors"][0]["line"] == 2


def test_more_than_100_invalid_events(server: Server) -> None:
    server.create_stream("s")
    lines, invalid_lines = [], []
    for i in range(1, 156):
        if i % 31 == 0:
            lines.append(json.dumps(event(i)))
        else:
            lines.append(json.dumps({"ts": TS, "n": f"bad{i}"}))
            invalid_lines.append(i)
    assert len(invalid_lines) == 150
    resp = server.post_events("s", "\n".join(lines) + "\n")
    assert counts(resp) == (5, 150)
    errors = resp.json()["errors"]
    assert len(errors) == 100
    assert [e["line"] for e in errors] == invalid_lines[:100]


# -- JSON bodies -------------------------------------------------------------------------


def test_json_single_object(server: Server) -> None:
    server.create_stream("s")
    good = server.post_events("s", json.dumps(event(1)), content_type="application/json")
    assert counts(good) == (1, 0)
    bad = server.post_events("s", json.dumps({"ts": TS, "n": "x"}), "application/json")
    assert counts(bad) == (0, 1)
    entry = bad.json()["errors"][0]
    assert entry["index"] == 0 and entry["field"] == "n", entry
    assert "line" not in entry, entry


def test_json_array_uses_zero_based_index(server: Server) -> None:
    server.create_stream("s")
    events = [event(0), {"ts": TS, "n": 1.5}, event(2), {"ts": TS, "n": 3, "zzz": 1}, event(4)]
    resp = server.post_events("s", json.dumps(events), content_type="application/json")
    assert counts(resp) == (3, 2)
    errors = resp.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "n"), (3, "zzz")], errors
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == [0, 2, 4]


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/x-ndjson", b""),
        ("application/x-ndjson", b"\n\n\r\n"),
        ("application/json", b"[]"),
        ("application/json", b""),
        (None, b""),
    ],
    ids=["ndjson-empty", "ndjson-blank-lines", "json-empty-array", "json-empty", "no-type-empty"],
)
def test_no_events_is_200_with_zeros(server: Server, content_type: str | None, body: bytes) -> None:
    server.create_stream("s")
    resp = server.post_events("s", body, content_type=content_type)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert (data["accepted"], data["rejected"], data["errors"]) == (0, 0, []), data


# -- content types and encodings ---------------------------------------------------------


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/x-ndjson; charset=utf-8", ndjson([event(1), event(2)])),
        ("application/json; charset=utf-8", json.dumps([event(1), event(2)]).encode()),
        ("application/json", json.dumps([event(1), event(2)]).encode()),
        (None, ndjson([event(1), event(2)])),
    ],
    ids=["ndjson-charset", "json-charset", "json", "missing-is-ndjson"],
)
def test_content_types_accepted(server: Server, content_type: str | None, body: bytes) -> None:
    server.create_stream("s")
    assert counts(server.post_events("s", body, content_type=content_type)) == (2, 0)


def test_text_plain_is_415(server: Server) -> None:
    server.create_stream("s")
    resp = server.post_events("s", ndjson([event(1)]), content_type="text/plain")
    assert_error(resp, 415, "unsupported_media_type")
    assert server.stream_info("s")["accepted"] == 0


@pytest.mark.parametrize(
    "encoding,compress",
    [
        ("gzip", gzip.compress),
        ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
        ("identity", lambda data: data),
    ],
)
def test_encodings_accepted(
    server: Server, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    server.create_stream("s")
    events = [event(i, msg="m" * 50) for i in range(100)]
    resp = server.post_events("s", compress(ndjson(events)), headers={"Content-Encoding": encoding})
    assert counts(resp) == (100, 0)
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == list(range(100))


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress"])
def test_unsupported_encodings_are_415(server: Server, encoding: str) -> None:
    server.create_stream("s")
    resp = server.post_events("s", ndjson([event(1)]), headers={"Content-Encoding": encoding})
    assert_error(resp, 415, "unsupported_encoding")


# -- 400 ---------------------------------------------------------------------------------


def test_malformed_json_array_is_400(server: Server) -> None:
    server.create_stream("s")
    body = '[{"ts": "2024-05-01T12:00:00Z", "n": 1}, {"ts": '
    assert_error(server.post_events("s", body, "application/json"), 400, "invalid_body")
    assert server.stream_info("s")["accepted"] == 0


def test_malformed_json_object_is_400(server: Server) -> None:
    server.create_stream("s")
    resp = server.post_events("s", '{"ts": "2024-05-01T12:00:00Z", "n": ', "application/json")
    assert_error(resp, 400, "invalid_body")


def test_bad_gzip_is_400(server: Server) -> None:
    server.create_stream("s")
    resp = server.post_events("s", ndjson([event(1)]), headers={"Content-Encoding": "gzip"})
    assert_error(resp, 400, "invalid_body")
    assert server.stream_info("s")["accepted"] == 0


def test_truncated_gzip_is_400(server: Server) -> None:
    server.create_stream("s")
    data = gzip.compress(ndjson([event(i) for i in range(50)]))
    resp = server.post_events("s", data[:-6], headers={"Content-Encoding": "gzip"})
    assert_error(resp, 400, "invalid_body")
    assert server.stream_info("s")["accepted"] == 0


def test_truncated_zstd_is_400(server: Server) -> None:
    server.create_stream("s")
    data = zstandard.ZstdCompressor().compress(ndjson([event(i, msg=str(i)) for i in range(200)]))
    resp = server.post_events("s", data[: len(data) // 2], headers={"Content-Encoding": "zstd"})
    assert_error(resp, 400, "invalid_body")
    assert server.stream_info("s")["accepted"] == 0


# -- 404 ---------------------------------------------------------------------------------


def test_unknown_stream_is_404(server: Server) -> None:
    assert_error(server.post_events("nope", ndjson([event(1)])), 404, "stream_not_found")


def test_unknown_route_is_404(server: Server) -> None:
    assert_error(server.get("/v1/no/such/route"), 404, "not_found")
    assert_error(server.get("/nothing-here"), 404, "not_found")


# -- 413 ---------------------------------------------------------------------------------


def test_body_size_limit_is_inclusive(make_server: Callable[..., Server]) -> None:
    server = make_server({"server": {"max_body_bytes": 4000}})
    server.create_stream("s")
    exact = sized_ndjson(4000)
    assert counts(server.post_events("s", exact)) == (4, 0)
    over = sized_ndjson(4001)
    assert_error(server.post_events("s", over), 413, "body_too_large")
    assert server.stream_info("s")["accepted"] == 4


def test_body_size_limit_counts_compressed_bytes(make_server: Callable[..., Server]) -> None:
    server = make_server({"server": {"max_body_bytes": 2000}})
    server.create_stream("s")
    # 20 kB of NDJSON that gzips far below 2000 bytes: accepted, the limit is on the wire.
    data = ndjson([event(i, msg="a" * 200) for i in range(100)])
    assert len(data) > 20_000
    packed = gzip.compress(data)
    assert len(packed) <= 2000
    resp = server.post_events("s", packed, headers={"Content-Encoding": "gzip"})
    assert counts(resp) == (100, 0)


def test_decompressed_size_limit_is_inclusive(make_server: Callable[..., Server]) -> None:
    limit = 100_000
    server = make_server({"server": {"max_decompressed_bytes": limit}})
    server.create_stream("s")
    exact = sized_ndjson(limit)
    resp = server.post_events("s", gzip.compress(exact), headers={"Content-Encoding": "gzip"})
    assert counts(resp) == (exact.count(b"\n"), 0)
    over = sized_ndjson(limit + 1)
    for encoding, packed in [
        ("gzip", gzip.compress(over)),
        ("zstd", zstandard.ZstdCompressor().compress(over)),
    ]:
        resp = server.post_events("s", packed, headers={"Content-Encoding": encoding})
        assert_error(resp, 413, "decompressed_body_too_large")


def test_gzip_bomb_is_413_and_server_stays_healthy(
    make_server: Callable[..., Server],
) -> None:
    server = make_server({"server": {"max_decompressed_bytes": 1_048_576}})
    server.create_stream("s")
    bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)
    assert len(bomb) < 200_000
    resp = server.post_events("s", bomb, headers={"Content-Encoding": "gzip"}, timeout=30)
    assert_error(resp, 413, "decompressed_body_too_large")
    zbomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * 50_000_000)
    resp = server.post_events("s", zbomb, headers={"Content-Encoding": "zstd"}, timeout=30)
    assert_error(resp, 413, "decompressed_body_too_large")
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").status_code == 200
    assert counts(server.post_events("s", ndjson([event(1)]))) == (1, 0)


# -- 422 ---------------------------------------------------------------------------------


def test_reject_request_is_422(server: Server) -> None:
    schema = {
        "fields": [{"name": "ts", "type": "timestamp"}, {"name": "n", "type": "int64"}],
        "time_field": "ts",
        "on_invalid": "reject_request",
    }
    server.create_stream("s", schema)
    resp = server.post_events("s", ndjson([event(1), {"ts": "yesterday", "n": 2}]))
    body = assert_error(resp, 422, "invalid_events")
    assert body["rejected"] == 1
    assert body["errors"][0]["line"] == 2 and body["errors"][0]["field"] == "ts", body
    assert server.stream_info("s")["accepted"] == 0


# -- 429 ---------------------------------------------------------------------------------


def test_memory_budget_exceeded_is_429_with_retry_after(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(
        {"limits": {"max_buffered_bytes": 1000}, "sinks": {"parquet": {"max_age": "1h"}}}
    )
    server.create_stream("s")
    batch = ndjson([event(i, msg="x" * 100) for i in range(50)])
    assert len(batch) > 5000
    resp = server.post_events("s", batch)
    assert_error(resp, 429, "memory_budget_exceeded")
    retry_after = resp.headers.get("Retry-After")
    assert retry_after is not None and retry_after.strip().isdigit(), resp.headers
    info = server.stream_info("s")
    assert info["accepted"] == 0, info
    assert server.get("/healthz").status_code == 200
    server.stop()
    assert server.rows("s") == []
