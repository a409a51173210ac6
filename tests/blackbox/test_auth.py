"""API keys (SPEC §1, §4, §7): `floodway keys`, the 401/403 matrix, changes without a restart,
and the refusal to serve a non-loopback address with no keys."""

from __future__ import annotations

import json
from collections.abc import Callable

from harness import Server, event, ndjson, run_cli, wait_for


def keys(server: Server, *args: str) -> str:
    result = run_cli(["keys", *args, "--data-dir", str(server.data_dir)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def status(server: Server, method: str, path: str, token: str | None, **kwargs: object) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return server.request(method, path, headers=headers, **kwargs).status_code  # type: ignore[arg-type]


def test_keys_cli_prints_the_token_once_and_lists_without_secrets(make_server: Callable[..., Server]) -> None:
    server = make_server(start=False)
    out = keys(server, "create", "--name", "ingest", "--streams", "a,b", "--rate-limit", "500")
    token = out.splitlines()[0]
    assert token.startswith("fw_") and len(token) > 40
    listing = keys(server, "list")
    assert "ingest" in listing and "write" in listing and "a,b" in listing and "500" in listing
    stored = (server.data_dir / "keys.json").read_text()
    assert token not in listing and token not in stored
    assert json.loads(stored)["keys"][0]["hash"] not in listing
    duplicate = run_cli(["keys", "create", "--name", "ingest", "--data-dir", str(server.data_dir)])
    assert duplicate.returncode != 0 and "exists" in duplicate.stderr
    keys(server, "revoke", "ingest")
    assert "ingest" not in keys(server, "list")


def test_auth_matrix(make_server: Callable[..., Server]) -> None:
    server = make_server()
    server.create_stream("a")  # no keys yet: open
    server.create_stream("b")
    writer = keys(server, "create", "--name", "writer", "--streams", "a").splitlines()[0]
    reader = keys(server, "create", "--name", "reader", "--scopes", "read").splitlines()[0]
    admin = keys(server, "create", "--name", "admin", "--scopes", "admin,read,write").splitlines()[0]
    revoked = keys(server, "create", "--name", "gone").splitlines()[0]
    keys(server, "revoke", "gone")
    body = ndjson([event(1)])
    post = {"data": body, "headers": {"Content-Type": "application/x-ndjson"}}
    # Keys appear without a restart (reloaded within a second).
    wait_for(lambda: status(server, "GET", "/v1/streams", None) == 401, timeout=5, what="auth on")
    resp = server.request("POST", "/v1/streams/a/events", data=body)
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
    assert resp.headers.get("WWW-Authenticate") == "Bearer"
    assert status(server, "POST", "/v1/streams/a/events", "fw_not_a_key", **post) == 401
    assert status(server, "POST", "/v1/streams/a/events", revoked, **post) == 401
    assert status(server, "POST", "/v1/streams/a/events", reader, **post) == 403  # wrong scope
    assert status(server, "POST", "/v1/streams/b/events", writer, **post) == 403  # wrong stream
    assert status(server, "POST", "/v1/streams/a/events", writer, **post) == 200  # right key
    assert status(server, "GET", "/v1/streams/a", reader) == 200
    assert status(server, "GET", "/v1/streams", writer) == 403
    schema = {"fields": [{"name": "ts", "type": "timestamp"}], "time_field": "ts"}
    assert status(server, "PUT", "/v1/streams/c", reader, json=schema) == 403
    assert status(server, "PUT", "/v1/streams/c", admin, json=schema) == 201
    # Operations endpoints need no key.
    for path in ["/healthz", "/readyz", "/metrics"]:
        assert status(server, "GET", path, None) == 200
    # Revoking a key takes effect on the running server within a second.
    keys(server, "revoke", "writer")
    wait_for(
        lambda: status(server, "POST", "/v1/streams/a/events", writer, **post) == 401, timeout=5, what="revoke"
    )


def test_non_loopback_without_keys_is_refused(make_server: Callable[..., Server]) -> None:
    server = make_server(start=False, bind_flag=False, env={"FLOODWAY_SERVER__BIND": "0.0.0.0:0"})
    server.spawn()
    assert server.wait_exit(timeout=20) != 0
    assert "refusing to listen" in server.log()


def test_rate_limit_answers_429_with_retry_after(make_server: Callable[..., Server]) -> None:
    server = make_server()
    server.create_stream("a")
    token = keys(server, "create", "--name", "slow", "--scopes", "write,read", "--rate-limit", "100").splitlines()[0]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    body = ndjson([event(i) for i in range(300)])
    wait_for(lambda: server.request("GET", "/v1/streams").status_code == 401, what="auth on")
    first = server.request("POST", "/v1/streams/a/events", data=body, headers=headers)
    assert first.status_code == 200, first.text
    second = server.request("POST", "/v1/streams/a/events", data=body, headers=headers)
    assert second.status_code == 429, second.text
    assert second.json()["error"] == "rate_limited"
    assert int(second.headers["Retry-After"]) >= 1
    # Nothing of the refused request was stored.
    info = server.request("GET", "/v1/streams/a", headers=headers).json()
    assert info["accepted"] == 300, info
