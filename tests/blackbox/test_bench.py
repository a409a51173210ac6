"""SPEC §8: `floodway bench` against a real server on loopback.

Timing figures are never asserted tightly (the machine is shared): only counts that follow
from the contract, and loose ranges where the schedule decides them.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from harness import Server, run_cli

JSON_KEYS = [
    "events_per_sec",
    "mb_per_sec",
    "requests_per_sec",
    "events_sent",
    "events_accepted",
    "duration_s",
    "latency_ms",
    "status",
    "errors",
    "generator_cpu_percent",
]
LATENCY_KEYS = ["p50", "p90", "p99", "p999", "max"]


def bench(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["bench", "--target", f"http://127.0.0.1:{server.port}", *args], timeout=60
    )


def bench_json(server: Server, *args: str) -> dict[str, Any]:
    result = bench(server, *args, "--json")
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{result.stdout}"
    summary = json.loads(lines[0])
    assert isinstance(summary, dict)
    return summary


def test_closed_loop_json_matches_the_contract_and_the_stream_counter(server: Server) -> None:
    summary = bench_json(
        server,
        "--stream", "bench", "--create-stream", "--max",
        "--duration", "2s", "--connections", "2", "--batch", "100",
    )  # fmt: skip
    assert list(summary) == JSON_KEYS
    assert list(summary["latency_ms"]) == LATENCY_KEYS
    assert summary["events_accepted"] > 0
    assert summary["events_sent"] == summary["events_accepted"], summary
    assert summary["events_sent"] % 100 == 0
    assert summary["errors"] == 0
    assert set(summary["status"]) == {"200"}, summary["status"]
    assert summary["status"]["200"] * 100 == summary["events_sent"]
    assert summary["events_per_sec"] > 0
    assert summary["mb_per_sec"] > 0
    assert summary["requests_per_sec"] > 0
    assert summary["duration_s"] >= 2.0
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"] <= latency["max"]
    assert isinstance(summary["generator_cpu_percent"], (int, float))
    assert summary["generator_cpu_percent"] >= 0

    info = server.stream_info("bench")
    assert info["accepted"] == summary["events_accepted"]
    assert info["rejected"] == 0


def test_open_loop_sends_about_rate_times_duration(server: Server) -> None:
    summary = bench_json(
        server,
        "--stream", "bench", "--create-stream", "--rate", "2000",
        "--duration", "2s", "--connections", "2", "--batch", "100",
    )  # fmt: skip
    # The schedule holds 40 requests of 100 events due before 2 s; a busy machine may send
    # fewer, never more.
    assert 2_000 <= summary["events_sent"] <= 4_000, summary
    assert summary["events_accepted"] == summary["events_sent"]
    assert 0 < summary["events_per_sec"] <= 2_100
    assert server.stream_info("bench")["accepted"] == summary["events_accepted"]


def test_compressed_bodies_with_idempotency_keys_are_all_accepted(server: Server) -> None:
    for encoding in ("--gzip", "--zstd"):
        before = server.stream_info("bench")["accepted"] if encoding == "--zstd" else 0
        summary = bench_json(
            server,
            "--stream", "bench", "--create-stream", "--max", encoding,
            "--idempotency-keys", "--retries", "2",
            "--duration", "1s", "--connections", "2", "--batch", "50",
        )  # fmt: skip
        assert summary["events_accepted"] > 0, summary
        assert summary["events_accepted"] == summary["events_sent"]
        assert server.stream_info("bench")["accepted"] - before == summary["events_accepted"]


def test_events_fit_a_stream_created_with_another_schema(server: Server) -> None:
    schema = {
        "fields": [
            {"name": "at", "type": "timestamp", "epoch_unit": "ms"},
            {"name": "ok", "type": "bool"},
            {"name": "n", "type": "int32", "min": -3, "max": 3},
            {"name": "day", "type": "date", "nullable": True},
            {"name": "amount", "type": "decimal", "precision": 6, "scale": 2, "min": 10},
            {"name": "id", "type": "uuid"},
            {"name": "code", "type": "string", "pattern": "^[a-z]+-[0-9]+$", "max_length": 40},
            {"name": "kind", "type": "enum", "values": ["a", "b"]},
            {"name": "extra", "type": "json", "nullable": True},
        ],
        "time_field": "at",
        "on_invalid": "reject_line",
    }
    server.create_stream("custom", schema)
    summary = bench_json(
        server,
        "--stream", "custom", "--max",
        "--duration", "1s", "--connections", "1", "--batch", "200",
    )  # fmt: skip
    assert summary["events_accepted"] > 0
    assert summary["events_accepted"] == summary["events_sent"]
    info = server.stream_info("custom")
    assert info["rejected"] == 0
    assert info["accepted"] == summary["events_accepted"]


def test_unknown_stream_or_unreachable_target_exits_non_zero(server: Server) -> None:
    result = bench(server, "--stream", "missing", "--max", "--duration", "1s")
    assert result.returncode != 0
    assert "missing" in result.stderr and "--create-stream" in result.stderr, result.stderr

    server.stop()
    result = bench(server, "--stream", "bench", "--max", "--duration", "1s", "--json")
    assert result.returncode != 0
    assert result.stdout.strip() == ""
