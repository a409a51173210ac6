"""SPEC §1, §5, §7: restarts, crash recovery, SIGTERM, health, `check`, config precedence, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import (
    SIMPLE_SCHEMA,
    TS,
    Server,
    committed_parquet_files,
    event,
    floodway_bin,
    free_port,
    ndjson,
    port_is_open,
    read_files,
    run_cli,
    to_toml,
    wait_for,
)

# -- restarts and durability -------------------------------------------------------------


def test_restart_keeps_catalog_counters_and_files(server: Server) -> None:
    server.create_stream("s")
    v2 = {
        **SIMPLE_SCHEMA,
        "fields": [*SIMPLE_SCHEMA["fields"], {"name": "x", "type": "int32", "nullable": True}],
    }
    assert server.put_stream("s", v2).status_code == 200
    server.create_stream("other")
    resp = server.post_events("s", ndjson([event(1), event(2), event(3, x=3), {"ts": TS}]))
    assert (resp.json()["accepted"], resp.json()["rejected"]) == (3, 1), resp.text
    server.stop()
    assert len(server.rows("s")) == 3

    server.restart()
    info = server.stream_info("s")
    assert info["version"] == 2, info
    assert [f["name"] for f in info["schema"]["fields"]] == ["ts", "n", "msg", "x"]
    assert (info["accepted"], info["rejected"]) == (3, 1), info
    assert info["delivered"]["parquet"] == 3, info
    listed = server.get("/v1/streams").json()["streams"]
    assert sorted((s["name"], s["version"]) for s in listed) == [("other", 1), ("s", 2)]
    # Identical PUT after restart is still 200 and keeps the version.
    assert server.put_stream("s", v2).status_code == 200
    assert server.stream_info("s")["version"] == 2

    server.ingest("s", [event(4), event(5, x=5)])
    info = server.stream_info("s")
    assert (info["accepted"], info["rejected"]) == (5, 1), info
    server.stop()
    rows = server.rows("s")
    assert sorted(r["n"] for r in rows) == [1, 2, 3, 4, 5]
    assert {r["n"]: r["x"] for r in rows if r["x"] is not None} == {3: 3, 5: 5}


def test_sigterm_flushes_open_files(make_server: Callable[..., Server]) -> None:
    server = make_server({"sinks": {"parquet": {"max_age": "1h"}}})
    server.create_stream("s")
    server.ingest("s", [event(i, msg=f"m{i}") for i in range(7)])
    server.ingest("s", [event(i, ts="2024-05-02T03:00:00Z") for i in range(7, 9)])
    assert server.parquet_files("s") == [], "a file was committed before max_age or max_rows"
    server.stop()  # asserts exit code 0
    assert sorted(r["n"] for r in server.rows("s")) == list(range(9))


# -- health ------------------------------------------------------------------------------


def test_healthz_and_readyz(server: Server) -> None:
    assert server.get("/healthz").status_code == 200
    resp = server.get("/readyz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready", body
    assert "reason" in body, body
    assert body["sinks"] == {"parquet": "ok"}, body


def test_shutdown_drain_answers_503(make_server: Callable[..., Server]) -> None:
    server = make_server(
        {"server": {"drain_timeout": "3s"}, "sinks": {"parquet": {"max_age": "1h"}}}
    )
    server.create_stream("s")
    server.ingest("s", [event(1)])
    started = time.monotonic()
    server.terminate()

    def readyz_503() -> Any:
        try:
            resp = server.get("/readyz", timeout=2)
        except Exception:
            return None
        # A Response is falsy for 4xx/5xx, so hand back the status and body instead.
        return (resp.status_code, resp.text) if resp.status_code == 503 else None

    _, text = wait_for(readyz_503, timeout=2.5, interval=0.02, what="/readyz 503 after SIGTERM")
    assert json.loads(text)["status"] == "not_ready", text
    resp = server.post_events("s", ndjson([event(2)]), timeout=5)
    assert time.monotonic() - started < 3, "the drain answers came too late to test"
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "shutting_down", resp.text
    assert resp.headers.get("Retry-After"), resp.headers
    code = server.wait_exit(30)
    assert code == 0, server.log()
    assert [r["n"] for r in server.rows("s")] == [1]


# -- check and config errors ---------------------------------------------------------------

BAD_TYPE_SCHEMA = {
    "fields": [{"name": "ts", "type": "timestamp"}, {"name": "zz", "type": "nope"}],
    "time_field": "ts",
}


def write_config(folder: Path, config: dict[str, Any], name: str = "floodway.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(to_toml(config))
    return path


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "schemas").mkdir(parents=True)
    (conf / "schemas" / "s.json").write_text(json.dumps(SIMPLE_SCHEMA))
    path = write_config(
        conf,
        {
            "server": {"bind": "127.0.0.1:9", "max_body_bytes": 1000, "drain_timeout": "2s"},
            "limits": {"max_buffered_bytes": 100000},
            "sinks": {"parquet": {"max_rows": 10, "max_age": "5s", "compression": "zstd"}},
            "streams": [{"name": "s", "schema_file": "schemas/s.json"}],
        },
    )
    result = run_cli(["check", "--config", str(path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr


BAD_CONFIGS: list[tuple[str, dict[str, Any], dict[str, Any] | None, list[str]]] = [
    # (id, config, schema file content for schemas/s.json, words stderr must contain)
    ("unknown-key", {"server": {"bogus_key": 1}}, None, ["bogus_key"]),
    ("unknown-section", {"nosuchsection": {"x": 1}}, None, ["nosuchsection"]),
    ("wrong-type", {"server": {"max_body_bytes": "lots"}}, None, ["max_body_bytes"]),
    ("bad-duration", {"sinks": {"parquet": {"max_age": "soon"}}}, None, ["max_age"]),
    (
        "bad-schema-file",
        {"streams": [{"name": "s", "schema_file": "schemas/s.json"}]},
        BAD_TYPE_SCHEMA,
        ["s.json", "zz"],
    ),
    (
        "missing-schema-file",
        {"streams": [{"name": "s", "schema_file": "schemas/missing.json"}]},
        None,
        ["missing.json"],
    ),
    (
        "bad-stream-name",
        {"streams": [{"name": "Bad-Name", "schema_file": "schemas/s.json"}]},
        SIMPLE_SCHEMA,
        ["Bad-Name"],
    ),
]


def prepare_bad_config(tmp_path: Path, config: dict[str, Any], schema: Any) -> Path:
    conf = tmp_path / "conf"
    if schema is not None:
        (conf / "schemas").mkdir(parents=True, exist_ok=True)
        (conf / "schemas" / "s.json").write_text(json.dumps(schema))
    return write_config(conf, config, name="bad-config.toml")


@pytest.mark.parametrize(
    "config,schema,words", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_check_rejects_a_bad_config(
    tmp_path: Path, config: dict[str, Any], schema: Any, words: list[str]
) -> None:
    path = prepare_bad_config(tmp_path, config, schema)
    result = run_cli(["check", "--config", str(path)], cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    names_file = "bad-config.toml" in result.stderr or any(
        w.endswith(".json") and w in result.stderr for w in words
    )
    assert names_file, f"stderr does not name the file: {result.stderr!r}"
    for word in words:
        assert word in result.stderr, f"stderr does not name {word!r}: {result.stderr!r}"


@pytest.mark.parametrize(
    "config,schema,words",
    [c[1:] for c in BAD_CONFIGS if c[0] in ("unknown-key", "wrong-type", "bad-schema-file")],
    ids=["unknown-key", "wrong-type", "bad-schema-file"],
)
def test_serve_with_bad_config_exits_before_binding(
    tmp_path: Path, config: dict[str, Any], schema: Any, words: list[str]
) -> None:
    path = prepare_bad_config(tmp_path, config, schema)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(floodway_bin()),
            "serve",
            "--config",
            str(path),
            "--bind",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        _, stderr = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail("serve with a bad config kept running")
    assert proc.returncode != 0
    assert not port_is_open(port)
    for word in words:
        assert word in stderr, f"stderr does not name {word!r}: {stderr!r}"


# -- precedence: flags > env > file > defaults -------------------------------------------------


def test_bind_env_beats_file_and_flag_beats_env(make_server: Callable[..., Server]) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    assert len({file_port, env_port, flag_port}) == 3
    config = {"server": {"bind": f"127.0.0.1:{file_port}"}}
    env = {"FLOODWAY_SERVER__BIND": f"127.0.0.1:{env_port}"}

    by_env = make_server(config, port=env_port, bind_flag=False, env=env)
    assert by_env.get("/healthz").status_code == 200
    assert not port_is_open(file_port)
    by_env.stop()

    by_flag = make_server(config, port=flag_port, bind_flag=True, env=env)
    assert by_flag.get("/healthz").status_code == 200
    assert not port_is_open(env_port) and not port_is_open(file_port)
    by_flag.stop()

    by_file = make_server(config, port=file_port, bind_flag=False)
    assert by_file.get("/healthz").status_code == 200
    by_file.stop()


def test_data_dir_env_beats_file_and_flag_beats_env(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    file_dir, env_dir, flag_dir = tmp_path / "file-dir", tmp_path / "env-dir", tmp_path / "flag-dir"
    config = {"server": {"data_dir": str(file_dir)}}
    env = {"FLOODWAY_SERVER__DATA_DIR": str(env_dir)}

    def ingest_and_stop(server: Server) -> None:
        server.create_stream("s")
        server.ingest("s", [event(1)])
        server.stop()

    ingest_and_stop(make_server(config, data_dir=env_dir, data_dir_flag=False, env=env))
    assert len(read_files(committed_parquet_files(env_dir / "parquet" / "s"))) == 1
    assert not file_dir.exists() or not committed_parquet_files(file_dir)

    ingest_and_stop(make_server(config, data_dir=flag_dir, data_dir_flag=True, env=env))
    assert len(read_files(committed_parquet_files(flag_dir / "parquet" / "s"))) == 1
    assert not file_dir.exists() or not committed_parquet_files(file_dir)
    assert len(read_files(committed_parquet_files(env_dir / "parquet" / "s"))) == 1


def test_nested_env_override(make_server: Callable[..., Server]) -> None:
    server = make_server(
        {"sinks": {"parquet": {"max_rows": 1000, "max_age": "1h"}}},
        env={"FLOODWAY_SINKS__PARQUET__MAX_ROWS": "5"},
    )
    server.create_stream("s")
    server.ingest("s", [event(i) for i in range(12)])
    server.stop()
    sizes = [len(read_files([p])) for p in server.parquet_files("s")]
    assert sum(sizes) == 12 and max(sizes) <= 5, sizes


def test_defaults_without_config_file(make_server: Callable[..., Server], tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    env = {
        "FLOODWAY_SERVER__BIND": f"127.0.0.1:{port}",
        "FLOODWAY_SERVER__DRAIN_TIMEOUT": "0s",
    }
    server = make_server(
        write_config=False,
        bind_flag=False,
        data_dir_flag=False,
        port=port,
        env=env,
        cwd=cwd,
        data_dir=cwd / "floodway-data",
    )
    server.create_stream("s")
    server.ingest("s", [event(1), event(2)])
    server.stop()
    assert sorted(r["n"] for r in server.rows("s")) == [1, 2]
    server.restart()
    assert server.stream_info("s")["accepted"] == 2


# -- CLI -----------------------------------------------------------------------------------


def test_version() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"floodway \d+\.\d+\.\d+\S*\n?", result.stdout), result.stdout


def test_help_lists_commands() -> None:
    result = run_cli(["--help"])
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "check" in result.stdout, result.stdout


# -- request ids (SPEC §7) -----------------------------------------------------------------


def test_every_answer_carries_a_request_id_and_a_sane_incoming_one_is_kept(server: Server) -> None:
    generated = {server.get("/healthz").headers["X-Request-Id"] for _ in range(3)}
    assert len(generated) == 3, generated
    assert server.get("/nope").headers["X-Request-Id"], "errors carry one too"
    kept = server.get("/healthz", headers={"X-Request-Id": "client-42:a.b_c"})
    assert kept.headers["X-Request-Id"] == "client-42:a.b_c"
    assert server.get("/healthz", headers={"X-Request-Id": "x" * 128}).headers["X-Request-Id"] == "x" * 128
    for insane in ["x" * 129, "has space", "semi;colon"]:
        replaced = server.get("/healthz", headers={"X-Request-Id": insane}).headers["X-Request-Id"]
        assert replaced != insane and replaced


def test_request_lines_at_debug_carry_the_request_id(make_server: Callable[..., Server]) -> None:
    server = make_server(extra_args=["--log-level", "debug"])
    server.get("/healthz", headers={"X-Request-Id": "trace-me-1"})
    wait_for(lambda: "trace-me-1" in server.log(tail=100_000), timeout=5, what="the request log line")
    line = next(line for line in server.log(tail=100_000).splitlines() if "trace-me-1" in line)
    assert "status=200" in line, line
