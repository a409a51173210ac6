"""GET /metrics (SPEC §7): Prometheus text with the named metrics, moving under traffic."""

from __future__ import annotations

import re

from harness import Server, event, ndjson, wait_for

NAMES = [
    "floodway_events_accepted_total",
    "floodway_events_rejected_total",
    "floodway_requests_total",
    "floodway_request_duration_seconds",
    "floodway_buffered_bytes",
    "floodway_wal_bytes",
    "floodway_sink_events_total",
    "floodway_sink_lag_events",
    "floodway_runtime_lag_seconds",
    "process_resident_memory_bytes",
]


def scrape(server: Server) -> dict[str, float]:
    resp = server.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in resp.text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_are_present_and_move_under_traffic(server: Server) -> None:
    server.create_stream("s")
    text = server.get("/metrics").text
    for name in NAMES:
        assert re.search(rf"^# TYPE {name} ", text, re.M), f"{name} missing"
    before = scrape(server)
    server.ingest("s", [event(i) for i in range(5)])
    resp = server.post_events("s", ndjson([event(9), {"ts": "bad", "n": 1}]))
    assert resp.status_code == 200
    server.get("/nope")
    after = scrape(server)
    assert after['floodway_events_accepted_total{stream="s"}'] == 6
    assert after['floodway_events_rejected_total{stream="s",reason="invalid"}'] == 1
    assert after['floodway_requests_total{code="200"}'] > before.get('floodway_requests_total{code="200"}', 0)
    assert after['floodway_requests_total{code="404"}'] >= 1
    assert after["floodway_request_duration_seconds_count"] > before["floodway_request_duration_seconds_count"]
    assert after['floodway_request_duration_seconds_bucket{le="+Inf"}'] == after["floodway_request_duration_seconds_count"]
    assert after["floodway_wal_bytes"] > 0
    assert after["process_resident_memory_bytes"] > 1_000_000
    assert after["floodway_runtime_lag_seconds"] >= 0
    # The sink delivers within max_age (1 s in tests): lag falls to 0, delivered reaches 6.
    wait_for(
        lambda: scrape(server)['floodway_sink_events_total{sink="parquet",stream="s"}'] == 6,
        timeout=10,
        what="delivery",
    )
    assert scrape(server)['floodway_sink_lag_events{sink="parquet",stream="s"}'] == 0
