"""SPEC §3 type table: every type's accept and reject rules, checked end to end.

Each case is one stream with a time field `ts` and one field `v` of the type under test,
and one NDJSON event whose `v` is given as raw JSON text (so `1.0`, `1e3` or a 19-digit
decimal reach the server exactly as written). One server handles all cases; it is then
stopped with SIGTERM and the accepted values are read back from Parquet.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from harness import TS, Server

REJECT = object()
ABSENT = None  # raw text None: the field is left out of the event


@dataclass(frozen=True)
class Case:
    id: str
    field: dict[str, Any]  # the field spec of `v`, without its name
    raw: str | None  # raw JSON text of the value, or None when the field is absent
    expected: Any  # REJECT, or the value read back from Parquet (normalized)

    @property
    def rejected(self) -> bool:
        return self.expected is REJECT


CASES: list[Case] = []


def ok(id: str, field: dict[str, Any], raw: str | None, expected: Any) -> None:
    CASES.append(Case(id, field, raw, expected))


def bad(id: str, field: dict[str, Any], raw: str | None) -> None:
    CASES.append(Case(id, field, raw, REJECT))


def us(seconds: int, micros: int = 0) -> int:
    return seconds * 1_000_000 + micros


# 2024-05-01T12:34:56Z as Unix seconds.
T0 = 1714566896

# -- bool ------------------------------------------------------------------------------
B = {"type": "bool"}
ok("bool-true", B, "true", True)
ok("bool-false", B, "false", False)
for raw in ['"true"', "1", "0", "null", '"false"', "[]"]:
    bad(f"bool-reject-{raw}", B, raw)

# -- int32 -----------------------------------------------------------------------------
I32 = {"type": "int32"}
ok("int32-zero", I32, "0", 0)
ok("int32-negative", I32, "-5", -5)
ok("int32-max", I32, "2147483647", 2147483647)
ok("int32-min", I32, "-2147483648", -2147483648)
for raw in ["1.0", "1e3", "1E3", '"1"', "2147483648", "-2147483649", "true", "null", "1.5"]:
    bad(f"int32-reject-{raw}", I32, raw)
I32R = {"type": "int32", "min": 100, "max": 599}
ok("int32-at-min", I32R, "100", 100)
ok("int32-at-max", I32R, "599", 599)
bad("int32-below-min", I32R, "99")
bad("int32-above-max", I32R, "600")

# -- int64 -----------------------------------------------------------------------------
I64 = {"type": "int64"}
ok("int64-max", I64, "9223372036854775807", 9223372036854775807)
ok("int64-min", I64, "-9223372036854775808", -9223372036854775808)
ok("int64-small", I64, "42", 42)
for raw in ["9223372036854775808", "-9223372036854775809", "1.0", "1e3", '"1"', "null", "false"]:
    bad(f"int64-reject-{raw}", I64, raw)
I64R = {"type": "int64", "min": 0}
ok("int64-at-min", I64R, "0", 0)
bad("int64-below-min", I64R, "-1")

# -- float64 ---------------------------------------------------------------------------
F = {"type": "float64"}
ok("float64-int", F, "1", 1.0)
ok("float64-fraction", F, "1.5", 1.5)
ok("float64-exponent", F, "1e3", 1000.0)
ok("float64-exponent-signed", F, "-2.5E-3", -2.5e-3)
ok("float64-tenth", F, "0.1", 0.1)
PI_TEXT = "3.14159265358979323846264338327950288"
ok("float64-long-digits", F, PI_TEXT, float(PI_TEXT))
ok("float64-rounding-2p53+1", F, "9007199254740993", 9007199254740992.0)
BIG_TEXT = "123456789012345678901234567890"
ok("float64-big-int", F, BIG_TEXT, float(BIG_TEXT))
for raw in ['"1.5"', '"1"', "null", "true", "{}"]:
    bad(f"float64-reject-{raw}", F, raw)
FN = {"type": "float64", "nullable": True}
ok("float64-nullable-null", FN, "null", None)
ok("float64-nullable-absent", FN, ABSENT, None)
FR = {"type": "float64", "min": 0, "max": 10}
ok("float64-at-min", FR, "0", 0.0)
ok("float64-at-max", FR, "10", 10.0)
ok("float64-in-range", FR, "9.99", 9.99)
bad("float64-below-min", FR, "-0.001")
bad("float64-above-max", FR, "10.5")

# -- string ----------------------------------------------------------------------------
S = {"type": "string"}
ok("string-ascii", S, '"hello"', "hello")
ok("string-empty", S, '""', "")
ok("string-unicode", S, json.dumps("héllo wörld ✓ 😀"), "héllo wörld ✓ 😀")
ok("string-escapes", S, '"a\\"b\\\\c\\n\\u00e9"', 'a"b\\c\né')
for raw in ["5", "null", "true", '["a"]', '{"a":1}']:
    bad(f"string-reject-{raw}", S, raw)
SL = {"type": "string", "max_length": 3}
ok("string-max-length-3-emoji", SL, json.dumps("😀😀😀"), "😀😀😀")
ok("string-max-length-3-accents", SL, json.dumps("héé"), "héé")
ok("string-max-length-3-ascii", SL, '"abc"', "abc")
bad("string-max-length-4-emoji", SL, json.dumps("😀😀😀😀"))
bad("string-max-length-4-ascii", SL, '"abcd"')
SP = {"type": "string", "pattern": "[0-9]+"}
ok("string-pattern-unanchored-inside", SP, '"abc123def"', "abc123def")
bad("string-pattern-unanchored-no-match", SP, '"abcdef"')
SPA = {"type": "string", "pattern": "^[0-9]+$"}
ok("string-pattern-anchored-match", SPA, '"123"', "123")
bad("string-pattern-anchored-prefix", SPA, '"abc123"')
bad("string-pattern-anchored-suffix", SPA, '"123abc"')

# -- enum ------------------------------------------------------------------------------
E = {"type": "enum", "values": ["debug", "info", "warn"]}
ok("enum-info", E, '"info"', "info")
ok("enum-warn", E, '"warn"', "warn")
for raw in ['"INFO"', '"Info"', '"trace"', '""', "1", "null"]:
    bad(f"enum-reject-{raw}", E, raw)

# -- timestamp -------------------------------------------------------------------------
T = {"type": "timestamp"}
ok("timestamp-z", T, '"2024-05-01T12:34:56Z"', us(T0))
ok("timestamp-micros", T, '"2024-05-01T12:34:56.123456Z"', us(T0, 123456))
ok("timestamp-one-digit", T, '"2024-05-01T12:34:56.1Z"', us(T0, 100000))
ok("timestamp-plus-offset", T, '"2024-05-01T14:34:56+02:00"', us(T0))
ok("timestamp-minus-offset", T, '"2024-05-01T07:04:56.5-05:30"', us(T0, 500000))
ok("timestamp-offset-crosses-date", T, '"2024-05-02T01:34:56+13:00"', us(T0))
ok("timestamp-zero-offset", T, '"2024-05-01T12:34:56+00:00"', us(T0))
ok("timestamp-7-digits-zero", T, '"2024-05-01T12:34:56.1234560Z"', us(T0, 123456))
ok("timestamp-9-digits-zero", T, '"2024-05-01T12:34:56.123456000Z"', us(T0, 123456))
for name, raw in [
    ("no-offset", '"2024-05-01T12:34:56"'),
    ("no-offset-fraction", '"2024-05-01T12:34:56.123"'),
    ("7-digits-nonzero", '"2024-05-01T12:34:56.1234567Z"'),
    ("9-digits-nonzero", '"2024-05-01T12:34:56.123456789Z"'),
    ("10-digits", '"2024-05-01T12:34:56.1234560000Z"'),
    ("date-only", '"2024-05-01"'),
    ("garbage", '"not a time"'),
    ("bad-month", '"2024-13-01T00:00:00Z"'),
    ("integer-without-epoch-unit", str(T0)),
    ("null", "null"),
    ("bool", "true"),
]:
    bad(f"timestamp-reject-{name}", T, raw)
for unit, raw, expected in [
    ("s", str(T0), us(T0)),
    ("ms", f"{T0}123", us(T0, 123000)),
    ("us", f"{T0}123456", us(T0, 123456)),
    ("ns", f"{T0}123456000", us(T0, 123456)),
    ("s", "-1", -1_000_000),
]:
    ok(f"timestamp-epoch-{unit}-{raw}", {"type": "timestamp", "epoch_unit": unit}, raw, expected)
ok(
    "timestamp-epoch-s-still-takes-rfc3339",
    {"type": "timestamp", "epoch_unit": "s"},
    '"2024-05-01T12:34:56Z"',
    us(T0),
)
bad("timestamp-epoch-ns-sub-micro", {"type": "timestamp", "epoch_unit": "ns"}, f"{T0}123456789")
bad("timestamp-epoch-s-fraction", {"type": "timestamp", "epoch_unit": "s"}, f"{T0}.5")
bad("timestamp-epoch-s-string-digits", {"type": "timestamp", "epoch_unit": "s"}, f'"{T0}"')

# -- date ------------------------------------------------------------------------------
D = {"type": "date"}
ok("date-valid", D, '"2023-12-31"', datetime.date(2023, 12, 31))
ok("date-leap-day", D, '"2024-02-29"', datetime.date(2024, 2, 29))
for name, raw in [
    ("2023-02-29", '"2023-02-29"'),
    ("2024-04-31", '"2024-04-31"'),
    ("2024-13-01", '"2024-13-01"'),
    ("short-fields", '"2024-2-3"'),
    ("slashes", '"2024/02/03"'),
    ("compact", '"20240203"'),
    ("with-time", '"2024-02-03T00:00:00Z"'),
    ("number", "20240203"),
    ("null", "null"),
]:
    bad(f"date-reject-{name}", D, raw)

# -- decimal ---------------------------------------------------------------------------
DEC = {"type": "decimal", "precision": 18, "scale": 4}
ok("decimal-string-exact", DEC, '"12345678901234.5678"', Decimal("12345678901234.5678"))
ok("decimal-number-exact", DEC, "12345678901234.5678", Decimal("12345678901234.5678"))
ok("decimal-max", DEC, '"99999999999999.9999"', Decimal("99999999999999.9999"))
ok("decimal-negative-string", DEC, '"-1.5"', Decimal("-1.5"))
ok("decimal-negative-number", DEC, "-0.0001", Decimal("-0.0001"))
ok("decimal-plus-sign-string", DEC, '"+2.25"', Decimal("2.25"))
ok("decimal-integer-number", DEC, "42", Decimal("42"))
ok("decimal-trailing-zeros-string", DEC, '"1.50000000"', Decimal("1.5"))
ok("decimal-trailing-zeros-number", DEC, "1.500000", Decimal("1.5"))
ok("decimal-tenth", DEC, "0.1", Decimal("0.1"))
for name, raw in [
    ("too-many-fraction-digits-string", '"0.00001"'),
    ("too-many-fraction-digits-number", "1.23456"),
    ("too-many-integer-digits-string", '"123456789012345"'),
    ("too-many-integer-digits-number", "123456789012345.1"),
    ("exponent-string", '"1e5"'),
    ("letters", '"abc"'),
    ("empty-string", '""'),
    ("bool", "true"),
    ("null", "null"),
]:
    bad(f"decimal-reject-{name}", DEC, raw)
DEC50 = {"type": "decimal", "precision": 5, "scale": 0}
ok("decimal-p5s0-max", DEC50, '"99999"', Decimal("99999"))
ok("decimal-p5s0-trailing-zero", DEC50, '"12.0"', Decimal("12"))
bad("decimal-p5s0-too-many-digits", DEC50, '"123456"')
bad("decimal-p5s0-fraction", DEC50, '"1.5"')

# -- uuid ------------------------------------------------------------------------------
U = {"type": "uuid"}
UID = "123e4567-e89b-12d3-a456-426614174000"
ok("uuid-lower", U, json.dumps(UID), uuid.UUID(UID).bytes)
ok("uuid-upper", U, json.dumps(UID.upper()), uuid.UUID(UID).bytes)
for name, raw in [
    ("no-hyphens", json.dumps(UID.replace("-", ""))),
    ("braces", json.dumps("{" + UID + "}")),
    ("urn", json.dumps("urn:uuid:" + UID)),
    ("short", json.dumps(UID[:-1])),
    ("non-hex", json.dumps("g" + UID[1:])),
    ("number", "5"),
    ("null", "null"),
]:
    bad(f"uuid-reject-{name}", U, raw)

# -- json ------------------------------------------------------------------------------
J = {"type": "json"}
ok("json-object", J, '{"a": 1, "b": [1, 2, {"c": null}]}', {"a": 1, "b": [1, 2, {"c": None}]})
ok("json-array", J, '[1, "x", null, true]', [1, "x", None, True])
ok("json-number", J, "42", 42)
ok("json-float", J, "3.5", 3.5)
ok("json-string", J, '"text"', "text")
ok("json-bool", J, "false", False)

# -- nullable, for every type ----------------------------------------------------------
for spec in [
    {"type": "bool"},
    {"type": "int32"},
    {"type": "int64"},
    {"type": "float64"},
    {"type": "string"},
    {"type": "enum", "values": ["a"]},
    {"type": "timestamp"},
    {"type": "date"},
    {"type": "decimal", "precision": 10, "scale": 2},
    {"type": "uuid"},
    {"type": "json"},
]:
    t = spec["type"]
    ok(f"nullable-{t}-null", {**spec, "nullable": True}, "null", None)
    ok(f"nullable-{t}-absent", {**spec, "nullable": True}, ABSENT, None)
    bad(f"not-nullable-{t}-absent", spec, ABSENT)
    bad(f"not-nullable-{t}-null", {**spec, "nullable": False}, "null")

assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


def schema_for(case: Case) -> dict[str, Any]:
    return {
        "fields": [{"name": "ts", "type": "timestamp"}, {"name": "v", **case.field}],
        "time_field": "ts",
    }


def line_for(case: Case) -> str:
    if case.raw is None:
        return f'{{"ts": "{TS}"}}\n'
    return f'{{"ts": "{TS}", "v": {case.raw}}}\n'


@dataclass
class Outcome:
    status: int | None = None
    body: Any = None
    problem: str | None = None  # set when the case could not even be sent
    rows: list[dict[str, Any]] | None = None


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Send every case to one server, stop it with SIGTERM, then read every stream back."""
    server = Server(tmp_path_factory.mktemp("types"))
    results: dict[str, Outcome] = {}
    stop_problem = None
    try:
        server.start()
        streams = {}
        for i, case in enumerate(CASES):
            stream = f"t{i:03d}"
            streams[case.id] = stream
            out = results[case.id] = Outcome()
            put = server.put_stream(stream, schema_for(case))
            if put.status_code != 201:
                out.problem = f"PUT schema answered {put.status_code}: {put.text}"
                continue
            resp = server.post_events(stream, line_for(case))
            out.status = resp.status_code
            try:
                out.body = resp.json()
            except ValueError:
                out.body = resp.text
        try:
            server.stop()
        except AssertionError as exc:
            stop_problem = str(exc)
        for case_id, stream in streams.items():
            results[case_id].rows = server.rows(stream)
    finally:
        server.kill()
    return results, stop_problem


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_type_rule(case: Case, outcomes: Any) -> None:
    results, stop_problem = outcomes
    out: Outcome = results[case.id]
    sent = line_for(case).strip()
    assert out.problem is None, out.problem
    assert out.status == 200, f"POST {sent!r}: {out.status} {out.body}"
    body = out.body
    if case.rejected:
        assert body["accepted"] == 0 and body["rejected"] == 1, f"{sent!r} -> {body}"
        assert len(body["errors"]) == 1, body
        err = body["errors"][0]
        assert err.get("line") == 1, err
        assert err.get("field") == "v", f"{sent!r} -> {err}"
        assert isinstance(err.get("reason"), str) and err["reason"], err
        assert stop_problem is None, stop_problem
        assert out.rows == [], f"a rejected event reached Parquet: {out.rows}"
    else:
        assert body["accepted"] == 1 and body["rejected"] == 0, f"{sent!r} -> {body}"
        assert body["errors"] == [], body
        assert stop_problem is None, stop_problem
        assert out.rows is not None and len(out.rows) == 1, f"rows for {sent!r}: {out.rows}"
        got = out.rows[0]["v"]
        if case.expected is None:
            assert got is None
        elif case.field["type"] == "json":
            assert isinstance(got, str), f"json column holds {got!r}"
            assert json.loads(got) == case.expected
        elif case.field["type"] == "float64":
            assert isinstance(got, float) and got == case.expected, f"{got!r} != {case.expected!r}"
        elif case.field["type"] == "decimal":
            assert isinstance(got, Decimal) and got == case.expected, f"{got!r}"
        else:
            assert got == case.expected, f"stored {got!r}, expected {case.expected!r}"
