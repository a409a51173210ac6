"""SPEC §3 `unknown_fields` and `on_invalid` policies, §6 dead letters."""

from __future__ import annotations

import json
import re
from typing import Any

from harness import SIMPLE_SCHEMA, TS, Server, event, ndjson


def schema(**options: Any) -> dict[str, Any]:
    return {**SIMPLE_SCHEMA, **options}


# -- unknown_fields ----------------------------------------------------------------------


def test_unknown_fields_reject_is_the_default(server: Server) -> None:
    server.create_stream("s")
    resp = server.post_events("s", ndjson([event(1), event(2, zzz=1)]))
    assert resp.status_code == 200
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (1, 1), body
    assert body["errors"][0]["line"] == 2
    assert body["errors"][0]["field"] == "zzz", body


def test_unknown_fields_reject_names_the_unknown_field(server: Server) -> None:
    server.create_stream("s", schema(unknown_fields="reject"))
    resp = server.post_events("s", ndjson([event(1, extra_field="x")]))
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (0, 1), body
    assert body["errors"][0]["field"] == "extra_field", body
    server.stop()
    assert server.rows("s") == []


def test_unknown_fields_drop(server: Server) -> None:
    server.create_stream("s", schema(unknown_fields="drop"))
    resp = server.post_events("s", ndjson([event(1, zzz=1, other={"a": 1}), event(2)]))
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 0), body
    server.stop()
    rows = server.rows("s")
    assert sorted(r["n"] for r in rows) == [1, 2]
    for row in rows:
        assert "zzz" not in row and "other" not in row and "_extra" not in row, row


def test_unknown_fields_keep_in_extra_column(server: Server) -> None:
    server.create_stream("s", schema(unknown_fields="keep"))
    extras = {"zzz": 1, "nested": {"a": [1, "two", None]}, "s": "é"}
    resp = server.post_events("s", ndjson([event(1, **extras), event(2)]))
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 0), body
    server.stop()
    rows = {r["n"]: r for r in server.rows("s")}
    assert set(rows) == {1, 2}
    assert "zzz" not in rows[1]
    assert isinstance(rows[1]["_extra"], str), rows[1]
    assert json.loads(rows[1]["_extra"]) == extras
    assert rows[2]["_extra"] is None, rows[2]


# -- on_invalid --------------------------------------------------------------------------


def test_on_invalid_reject_line_keeps_valid_events(server: Server) -> None:
    server.create_stream("s", schema(on_invalid="reject_line"))
    body_text = ndjson([event(1), {"ts": TS, "n": "two"}, event(3)])
    body = server.post_events("s", body_text).json()
    assert (body["accepted"], body["rejected"]) == (2, 1), body
    assert len(body["errors"]) == 1, body
    assert body["errors"][0]["line"] == 2 and body["errors"][0]["field"] == "n", body
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == [1, 3]


def test_on_invalid_reject_request_is_all_or_nothing(server: Server) -> None:
    server.create_stream("s", schema(on_invalid="reject_request"))
    resp = server.post_events("s", ndjson([event(1), {"ts": TS, "n": 1.5}, event(3)]))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid_events", body
    assert isinstance(body.get("detail"), str)
    assert body["rejected"] == 1, body
    assert body["errors"][0]["line"] == 2 and body["errors"][0]["field"] == "n", body
    info = server.stream_info("s")
    assert info["accepted"] == 0, info
    # An all-valid request still goes through.
    ok = server.post_events("s", ndjson([event(7)]))
    assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text
    server.stop()
    assert [r["n"] for r in server.rows("s")] == [7]


def test_on_invalid_reject_request_json_array(server: Server) -> None:
    server.create_stream("s", schema(on_invalid="reject_request"))
    body_text = json.dumps([event(1), event(2), {"ts": TS}])
    resp = server.post_events("s", body_text, content_type="application/json")
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid_events"
    assert body["errors"][0]["index"] == 2 and body["errors"][0]["field"] == "n", body
    server.stop()
    assert server.rows("s") == []


def test_on_invalid_dead_letter(server: Server) -> None:
    server.create_stream("s", schema(on_invalid="dead_letter"))
    bad_field = '{"ts": "2024-05-01T12:00:00Z", "n": "not a number"}'
    bad_json = '{"ts": "2024-05-01T12:00:00Z", "n": '
    lines = [json.dumps(event(1)), bad_field, json.dumps(event(2)), bad_json]
    resp = server.post_events("s", "\n".join(lines) + "\n")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == 2, body
    assert body["rejected"] == 0, body
    assert body["dead_lettered"] == 2, body
    assert [e["line"] for e in body["errors"]] == [2, 4], body
    assert body["errors"][0]["field"] == "n"
    assert server.stream_info("s")["dead_lettered"] == 2
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == [1, 2]
    files = server.dead_letter_files("s")
    assert files, f"no dead-letter file under {server.parquet_root / '_dead_letter' / 's'}"
    for path in files:
        assert re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", path.parent.name), path
    records = sorted(server.dead_letters("s"), key=lambda r: r["line"])
    assert [r["line"] for r in records] == [2, 4], records
    assert [r["raw"] for r in records] == [bad_field, bad_json]
    for record in records:
        assert isinstance(record["reason"], str) and record["reason"], record
        assert record["received_at"], record


def test_on_invalid_dead_letter_json_array_uses_index(server: Server) -> None:
    server.create_stream("s", schema(on_invalid="dead_letter"))
    bad = {"ts": TS, "n": True}
    resp = server.post_events("s", json.dumps([event(1), bad]), content_type="application/json")
    body = resp.json()
    assert (body["accepted"], body["dead_lettered"]) == (1, 1), body
    assert body["errors"][0]["index"] == 1, body
    server.stop()
    records = server.dead_letters("s")
    assert len(records) == 1, records
    assert records[0]["index"] == 1
    assert json.loads(records[0]["raw"]) == bad
