"""Faults from the server are retried and recorded, never silently dropped; bad endpoints are clear errors."""

from __future__ import annotations

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi import build_dataset
from rs_vlm_app.mpgi.generate import backoff_delay
from tests.mpgi import data
from tests.mpgi.fakechat import user_text
from tests.mpgi.helpers import folder_config, ok_attempts_per_unit, outputs, query, rsvlm
from tests.tinyllm import free_port


def test_every_kind_of_fault_is_retried_and_recorded(tmp_path, fake_server):
    fake_server.script(("status", 500), "garbage", ("status", 429, 0), "empty", "nochoices", ("hang", 3), "drop",
                       ("status", 503))
    backend = data.openai_backend(fake_server.base_url, "fake", concurrency=1, retries=8, timeout_s=1.0)
    config = folder_config(tmp_path, fake_server.base_url, images=1, backend=backend, perspectives=())
    summary = build_dataset(config)
    assert summary.status == "completed" and summary.failed_units == 0
    assert summary.retried == 8
    errors = [row[0] for row in query(config.manifest_path, "SELECT error FROM attempts WHERE status = 'error' ORDER BY id")]
    assert len(errors) == 8 == len(fake_server.faults)
    expected = ["HTTP 500: ", "malformed reply (not JSON): ", "HTTP 429: ", "malformed reply: no text",
                "malformed reply (no choices[0].message)", "no reply within 1 s (timeout)", "connection failed",
                "HTTP 503: "]
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start), (error, start)
    # the relay unit took 9 attempts, numbered 1..9, and only the last succeeded
    rows = query(config.manifest_path, "SELECT attempt, status FROM attempts WHERE stage = 'relay' ORDER BY attempt")
    assert rows == [(i, "error") for i in range(1, 9)] + [(9, "ok")]
    assert all(n == 1 for n in ok_attempts_per_unit(config.manifest_path).values())


def test_a_unit_out_of_retries_fails_visibly_and_is_retried_next_build(tmp_path, fake_server):
    config = folder_config(tmp_path, fake_server.base_url, images=3, perspectives=())
    # the relay prompt of a forest image says so (the scene class is among its facts)
    fake_server.rule = lambda body, n: ("status", 500) if "classified as forest" in user_text(body) else None
    summary = build_dataset(config)
    assert summary.status == "incomplete"
    assert summary.failed_units == 2  # both forest images' relay
    relay_rows = query(config.manifest_path,
                       "SELECT i.key, COUNT(*) FROM attempts a JOIN images i ON i.id = a.image_id "
                       "WHERE a.stage = 'relay' AND a.status = 'error' GROUP BY i.key")
    assert relay_rows == [("AID/forest/forest_0.png", 3), ("AID/forest/forest_1.png", 3)]  # retries: 2
    done = outputs(config.manifest_path)
    assert ("AID/river/river_0.png", "caption:long") in done
    assert not any(key.startswith("AID/forest") and stage.startswith("caption") for key, stage in done)
    status = rsvlm("dataset", "status", str(config.output))
    assert status.returncode == 0, status.stderr
    assert "failed (2, retried on the next build):" in status.stdout
    assert "AID/forest/forest_0.png relay: HTTP 500: " in status.stdout and "(3 attempts)" in status.stdout
    # the server recovers: a second build finishes the forest images and asks nothing about the river one
    fake_server.rule = None
    before = len(fake_server.requests)
    summary = build_dataset(config)
    assert summary.status == "completed"
    asked = fake_server.requests[before:]
    assert len(asked) == 2 * 3  # relay + two captions for each forest image
    assert not any("classified as river" in user_text(body) for body in asked)
    assert outputs(config.manifest_path).items() >= done.items()  # nothing lost, nothing replaced
    assert all(n == 1 for n in ok_attempts_per_unit(config.manifest_path).values())


def test_a_permanent_error_is_not_retried(tmp_path, fake_server):
    fake_server.rule = lambda body, n: ("status", 400) if "classified as river" in user_text(body) else None
    config = folder_config(tmp_path, fake_server.base_url, images=2, perspectives=())
    summary = build_dataset(config)
    assert summary.failed_units == 1
    rows = query(config.manifest_path, "SELECT stage, status, error FROM attempts a JOIN images i ON i.id = a.image_id "
                                       "WHERE i.key LIKE '%river%' AND stage != 'rules'")
    assert rows == [("relay", "error", "HTTP 400: {\"error\": {\"message\": \"injected 400\"}}")]


def test_endpoint_down_at_the_start_is_one_clear_line(tmp_path):
    port = free_port()
    config = folder_config(tmp_path, f"http://127.0.0.1:{port}/v1", images=1)
    config_path = data.write_config(tmp_path / "build.yaml", config.to_dict())
    result = rsvlm("dataset", "build", str(config_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"rsvlm: error: backend 'llm': http://127.0.0.1:{port}/v1 is not reachable "
                                "(connection failed")
    assert lines[-1].endswith("start the server or fix base_url in the config")
    assert "Traceback" not in result.stderr
    status = rsvlm("dataset", "status", str(config.output))
    assert f"failed: backend 'llm': http://127.0.0.1:{port}/v1 is not reachable" in status.stdout


def test_a_refused_model_name_is_one_clear_line(tmp_path, fake_server):
    fake_server.answer_preflight = False
    fake_server.rule = lambda body, n: ("status", 400)
    config = folder_config(tmp_path, fake_server.base_url, images=1)
    with pytest.raises(UserError, match=r"backend 'llm': .* \(model fake\) refused a test request: HTTP 400"):
        build_dataset(config)


def test_an_endpoint_that_goes_away_stops_the_build_keeping_its_work(tmp_path, fake_server):
    def rule(body, n):
        if n == 8:
            fake_server.stop_listening()
        return "drop" if n >= 8 else None

    fake_server.rule = rule
    backend = data.openai_backend(fake_server.base_url, "fake", concurrency=1)
    config = folder_config(tmp_path, fake_server.base_url, images=6, backend=backend, perspectives=())
    with pytest.raises(UserError, match="stopped accepting connections; finished work is kept"):
        build_dataset(config)
    kept = outputs(config.manifest_path)
    assert sum(stage != "rules" for _, stage in kept) >= 1
    runs = query(config.manifest_path, "SELECT status, error FROM runs")
    assert runs[-1][0] == "failed" and "stopped accepting connections" in runs[-1][1]


def test_api_key_comes_from_the_environment(tmp_path, fake_server, monkeypatch):
    backend = data.openai_backend(fake_server.base_url, "fake", api_key_env="RSVLM_TEST_KEY")
    config = folder_config(tmp_path, fake_server.base_url, images=1, backend=backend, perspectives=())
    monkeypatch.delenv("RSVLM_TEST_KEY", raising=False)
    with pytest.raises(UserError, match="the environment variable RSVLM_TEST_KEY is not set"):
        build_dataset(config)
    monkeypatch.setenv("RSVLM_TEST_KEY", "sk-secret-123")
    build_dataset(config)
    assert fake_server.headers[-1]["Authorization"] == "Bearer sk-secret-123"
    stored = query(config.manifest_path, "SELECT COUNT(*) FROM meta WHERE value LIKE '%sk-secret%'")[0][0]
    stored += query(config.manifest_path, "SELECT COUNT(*) FROM attempts WHERE output LIKE '%sk-secret%' "
                                          "OR error LIKE '%sk-secret%' OR prompt_hash LIKE '%sk-secret%'")[0][0]
    assert stored == 0


def test_a_proxy_named_by_the_environment_carries_the_requests(tmp_path, fake_server, monkeypatch):
    """HTTP_PROXY as curl reads it: requests for a host only the proxy reaches go through it; NO_PROXY
    sends them direct (here: to a host that does not exist)."""
    target = "http://model-server.invalid:8000/v1"
    config = folder_config(tmp_path, target, images=1, perspectives=())
    proxy = fake_server.base_url.removesuffix("/v1")
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    summary = build_dataset(config)
    assert summary.status == "completed" and summary.failed_units == 0
    assert fake_server.requests and {h["Host"] for h in fake_server.headers} == {"model-server.invalid:8000"}
    monkeypatch.setenv("NO_PROXY", "localhost,.invalid")
    sent = len(fake_server.requests)
    with pytest.raises(UserError, match=r"backend 'llm': http://model-server.invalid:8000/v1 is not reachable "
                                        r"\(connection failed"):
        build_dataset(folder_config(tmp_path / "direct", target, images=1, perspectives=()))
    assert len(fake_server.requests) == sent


def test_backoff_grows_and_honours_retry_after():
    delays = [backoff_delay(i, 1.0, 30.0) for i in range(6)]
    assert 0.5 <= delays[0] <= 1.0 and 8.0 <= delays[4] <= 16.0 and delays[5] <= 30.0
    assert backoff_delay(0, 1.0, 30.0, retry_after=7.0) == 7.0
