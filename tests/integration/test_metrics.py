"""The Prometheus endpoint (`metrics.listen`, issue 3): served from the
daemon's own loop, it reports per projection what the status table says
(events processed, position), plus batch and latency histograms; it answers
errors for anything but GET /metrics, and a scraper that connects and says
nothing neither blocks other scrapes nor the projections."""

import re
import socket
import time
import urllib.error
import urllib.request

import pytest

import oracle
from daemon import EXIT_CONFIG, run_cli
from eventgen import generate_mix
from pgcluster import free_port

SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$')


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        samples[(m.group(1), tuple(sorted(labels.items())))] = float(m.group(3))
    return samples


def value(samples, name, projection, **labels):
    return samples[(name, tuple(sorted(dict(labels, projection=projection).items())))]


def metrics_config(port):
    return f'metrics = {{ listen = "127.0.0.1:{port}"; }};'


def test_metrics_agree_with_the_status_table(db, start_daemon):
    port = free_port()
    db.append_all(generate_mix(seed=4242, n_events=5_000, days=2))
    daemon = start_daemon(batch_size=400, poll_interval_ms=200, extra=metrics_config(port))
    rows = daemon.wait_caught_up(timeout=60)
    head = db.scalar("SELECT max(global_position) FROM event_store.domain_event")

    # An idle scraper holds a connection open while the real scrape goes on.
    idle = socket.create_connection(("127.0.0.1", port))
    try:
        samples = scrape(port)
    finally:
        idle.close()
    with db.connect() as conn:
        handled = oracle.handled_counts(conn)
    for name in oracle.KNOWN:
        assert value(samples, "projectord_events_processed_total", name) == handled[name]
        assert value(samples, "projectord_events_processed_total", name) == rows[name]["events_processed"]
        assert value(samples, "projectord_events_skipped_total", name) == 0
        assert value(samples, "projectord_projection_owned", name) == 1
        assert value(samples, "projectord_projection_failed", name) == 0
        assert value(samples, "projectord_last_position", name) == head
        assert value(samples, "projectord_lag_events", name) == 0
        assert value(samples, "projectord_projection_status", name, status="live") == 1
        batches = value(samples, "projectord_batches_total", name)
        assert batches >= handled[name] / 400
        # Every committed batch is timed, and has a latency (its events have commit times).
        for hist in ("projectord_batch_duration_seconds", "projectord_apply_latency_seconds"):
            assert value(samples, f"{hist}_count", name) == batches
            assert value(samples, f"{hist}_bucket", name, le="+Inf") == batches
            buckets = [v for (n, l), v in samples.items()
                       if n == f"{hist}_bucket" and ("projection", name) in l]
            assert buckets == sorted(buckets), f"{hist} buckets are not cumulative"
    assert samples[("projectord_instances", ())] == 1


def test_only_get_metrics_is_served(db, start_daemon):
    port = free_port()
    daemon = start_daemon(poll_interval_ms=200, extra=metrics_config(port))
    daemon.wait_started()
    # Before the first heartbeat: the claims counted this instance even if
    # they ran before its listener took its presence lock.
    assert scrape(port)[("projectord_instances", ())] == 1
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert err.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST"), timeout=10)
    assert err.value.code == 405
    # A request that never ends is cut off by its size, not left to grow.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 8000)
        assert s.recv(100).startswith(b"HTTP/1.1 431")
    # More idle scrapers than it serves at once: the extra ones wait in the
    # backlog; once they are gone it serves again.
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    time.sleep(0.5)
    for s in held:
        s.close()
    assert scrape(port)[("projectord_instances", ())] == 1
    assert daemon.alive()


def test_bad_or_busy_listen_address(db, start_daemon, workdir):
    bad = start_daemon(name="bad", extra='metrics = { listen = "9187"; };')
    assert bad.wait(timeout=10) == EXIT_CONFIG
    assert "metrics.listen: must be HOST:PORT" in bad.log()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = start_daemon(name="busy", extra=metrics_config(port))
        assert busy.wait(timeout=10) == 1
        assert re.search(r"metrics\.listen: cannot listen on 127\.0\.0\.1:\d+: Address already in use",
                         busy.log())
    check = run_cli(["-c", bad.config_path, "check-config"])
    assert check.returncode == EXIT_CONFIG
