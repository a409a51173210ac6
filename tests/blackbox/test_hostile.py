"""Hostile input: each case gets a clear 4xx (or a closed connection), and the server keeps
serving a normal request right after."""

from __future__ import annotations

import socket
from collections.abc import Callable

from harness import Server, event, ndjson

TS = '"ts":"2024-05-01T12:00:00Z"'


def still_serving(server: Server) -> None:
    resp = server.post_events("s", ndjson([event(1)]))
    assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text


def one_rejected(server: Server, body: bytes) -> dict:
    resp = server.post_events("s", body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["accepted"] == 0 and answer["rejected"] == 1, answer
    return answer["errors"][0]


def test_hostile_events_are_rejected_one_by_one(make_server: Callable[..., Server]) -> None:
    server = make_server()
    server.create_stream("s")
    cases = {
        "deep": ("{" + TS + ',"n":1,"msg":' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
        "huge integer": ("{" + TS + ',"n":' + "9" * 10_000 + "}").encode(),
        "huge float as int": ("{" + TS + ',"n":1e400}').encode(),
        "invalid utf-8": b"{" + TS.encode() + b',"n":1,"msg":"\xff\xfe"}',
        "raw nul": b"{" + TS.encode() + b',"n":1,"msg":"a\x00b"}',
    }
    for name, body in cases.items():
        error = one_rejected(server, body)
        assert error["line"] == 1, (name, error)
        still_serving(server)
    long_name = "k" * 1_000_000
    error = one_rejected(server, ("{" + TS + ',"n":1,"' + long_name + '":1}').encode())
    assert len(error["field"]) < 100, "an unknown field's name is cut in the answer"
    still_serving(server)


def test_a_body_shorter_than_its_content_length_is_cut_off(make_server: Callable[..., Server]) -> None:
    server = make_server({"server": {"request_timeout": "1s"}})
    server.create_stream("s")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: 1000\r\n\r\n" + ndjson([event(1)])
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    still_serving(server)


def test_slow_headers_are_cut_off(make_server: Callable[..., Server]) -> None:
    server = make_server({"server": {"request_timeout": "1s"}})
    server.create_stream("s")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\n")
        # The server closes the connection once request_timeout passes without the headers.
        answer = sock.recv(4096)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    still_serving(server)


def test_early_answers_close_the_connection_and_keep_alive_survives_the_rest(
    make_server: Callable[..., Server],
) -> None:
    """An answer given before the body was read says `Connection: close` (the server closes
    such a connection), so a client never reuses a dead connection; answers after the body
    was read keep the connection."""
    server = make_server()
    server.create_stream("s", {"fields": [{"name": "ts", "type": "timestamp"}], "time_field": "ts"})
    body = ndjson([event(1)])
    for _ in range(20):
        unknown = server.request("POST", "/v1/streams/nope/events", data=body,
                                 headers={"Content-Type": "application/x-ndjson"})
        assert unknown.status_code == 404
        no_route = server.request("PUT", "/v1/no/such/route", data=b'{"fields": []}',
                                  headers={"Content-Type": "application/json"})
        assert no_route.status_code == 404
        assert no_route.headers.get("Connection", "").lower() == "close", no_route.headers
        bad_name = server.request("PUT", "/v1/streams/Bad%20Name", data=b'{"fields": []}',
                                  headers={"Content-Type": "application/json"})
        assert bad_name.status_code == 400
        # The same session goes on without a connection error.
        invalid = server.request("POST", "/v1/streams/s/events", data=b'{"ts": 5}\n',
                                 headers={"Content-Type": "application/x-ndjson"})
        assert invalid.status_code == 200 and invalid.json()["rejected"] == 1, invalid.text
        assert "close" not in invalid.headers.get("Connection", "").lower(), invalid.headers
        ok = server.request("POST", "/v1/streams/s/events", data=ndjson([{"ts": "2024-05-01T00:00:00Z"}]),
                            headers={"Content-Type": "application/x-ndjson"})
        assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text
