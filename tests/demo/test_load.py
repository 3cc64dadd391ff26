"""The demo under load: 50 generation requests from 8 concurrent `gradio_client` clients, bad uploads meanwhile
(benchmarks/bench_demo_load.py, run against a real `hf-vqgan demo` server on 127.0.0.1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_demo_load import passed, run_load  # noqa: E402

pytestmark = pytest.mark.browser


def test_fifty_requests_from_eight_clients_all_answered_correctly_with_bad_uploads_alongside(demo_servers):
    server = demo_servers("class")
    figures = run_load(server.url, server.process.pid, requests=50, clients=8, num_images=2, distinct=6, timeout=240)
    print(json.dumps(figures, indent=2))  # the figures, in the test log (-s) and in the report
    assert figures["answered_correctly"] == 50, figures["errors"]
    assert figures["bad_uploads"]["notes.png"].startswith("refused: notes.png is not an image")
    assert figures["bad_uploads"]["huge.png"].startswith("refused: huge.png is 5000x4000 pixels")
    for name in ("cmyk.jpg", "gray16.png", "bilevel.png", "rgba.png"):
        assert figures["bad_uploads"][name] == "reconstructed", figures["bad_uploads"]
    assert figures["still_serving"] and passed(figures)
    assert figures["p95_s"] >= figures["p50_s"] > 0
    assert figures["peak_rss_mib"] > 0
    assert "Traceback" not in server.log.read_text()
