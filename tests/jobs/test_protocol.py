"""The worker protocol: round-trips, tolerant decoding, requests. Pure standard library."""

from __future__ import annotations

import ast
import json
import logging
import math
import sys
from pathlib import Path

import pytest

from rs_vlm_app.jobs import protocol as p

PROTOCOL_FILE = Path(p.__file__)


def roundtrip(event: p.Event) -> p.Event:
    line = p.encode_event(event)
    assert line.endswith("\n") and line.count("\n") == 1, "one event = exactly one line"
    return p.decode_event(line)


@pytest.mark.parametrize("event", [
    p.Hello(app_version="0.1.0", mode="serve", pid=42, versions={"torch": "2.14.1"},
            device={"default": "cpu", "cuda": []}),
    p.Started(kind="localize", title="lakes on scene.tif", job="q1"),
    p.Progress(stage="encode tiles", done=12, total=40, rate=3.5, eta=8.0, job="q1"),
    p.Progress(stage="scan", done=3, job="q1"),
    p.Log(message="first line\nsecond line", level="warning", job="q1"),
    p.Result(kind="localize", job="q1", summary={"queries": [{"query": "a lake", "hotspots": 2}]},
             files=[p.ResultFile("/o/a_lake_heatmap.tif", "heatmap", "a lake"),
                    p.ResultFile("/o/a_lake.gpkg", "vectors", "a lake", ["hotspots", "tiles"])]),
    p.Error(message="scene.tif: file not found", kind="user", job="q1"),
    p.Cancelled(job="q1"),
])
def test_every_event_survives_a_round_trip(event):
    assert roundtrip(event) == event


def test_lines_are_plain_json_objects_with_an_event_name():
    line = p.encode_event(p.Progress(stage="encode tiles", done=1, total=2, job="j"))
    assert json.loads(line) == {"event": "progress", "job": "j", "stage": "encode tiles", "done": 1,
                                "total": 2, "rate": None, "eta": None}


def test_unicode_and_newlines_stay_on_one_line():
    event = p.Log(message="Zürich – 東京\nline two")
    line = p.encode_event(event)
    assert line.count("\n") == 1
    assert p.decode_event(line.encode("utf-8")).message == "Zürich – 東京\nline two"


def test_non_finite_numbers_are_sent_as_null():
    line = p.encode_event(p.Progress(stage="s", done=1, rate=math.inf, eta=math.nan))
    event = p.decode_event(line)
    assert event.rate is None and event.eta is None
    assert json.loads(p.encode_event(p.Result(summary={"x": math.nan})))["summary"] == {"x": None}


@pytest.mark.parametrize("line", [
    "not json at all",
    "[1, 2, 3]",
    '{"no_event": 1}',
    '{"event": 7}',
    '{"event": "progress", "stage": "s", "done": "many"}',
    '{"event": "result", "files": "oops"}',
    '{"event": "progress", "stage": "s", "done": 1',  # cut off
])
def test_malformed_lines_are_ignored_with_a_warning(line, caplog):
    with caplog.at_level(logging.WARNING, logger="rs_vlm_app.jobs.protocol"):
        assert p.decode_event(line) is None
    assert len(caplog.records) == 1
    assert "ignored" in caplog.records[0].getMessage()


def test_blank_lines_are_ignored_silently(caplog):
    with caplog.at_level(logging.WARNING):
        assert p.decode_event("  \r\n") is None
    assert not caplog.records


def test_unknown_event_types_are_tolerated(caplog):
    with caplog.at_level(logging.WARNING):
        event = p.decode_event('{"event": "heartbeat", "job": "q1", "load": 0.3}')
    assert isinstance(event, p.UnknownEvent)
    assert event.name == "heartbeat" and event.job == "q1" and event.data["load"] == 0.3
    assert not caplog.records


def test_unknown_fields_of_known_events_are_kept():
    event = p.decode_event('{"event": "progress", "stage": "s", "done": 1, "gpu_memory": 123}')
    assert event.extra == {"gpu_memory": 123}
    assert json.loads(p.encode_event(event))["gpu_memory"] == 123


def test_missing_optional_fields_take_defaults():
    event = p.decode_event('{"event": "error", "message": "boom"}')
    assert event == p.Error(message="boom", kind="internal")
    result = p.decode_event('{"event": "result", "files": ["/a.tif"]}')
    assert result.files == [p.ResultFile("/a.tif")]


def test_event_stream_joins_partial_chunks():
    stream = p.EventStream()
    data = (p.encode_event(p.Started(kind="localize", job="a"))
            + p.encode_event(p.Progress(stage="s", done=1, total=3, job="a"))
            + "garbage line\n"
            + p.encode_event(p.Cancelled(job="a")))
    raw = data.encode("utf-8")
    events = []
    for i in range(0, len(raw), 7):  # arbitrary chunk boundaries, even inside UTF-8 sequences
        events += stream.feed(raw[i:i + 7])
    events += stream.close()
    assert [e.type for e in events] == ["started", "progress", "cancelled"]


def test_event_stream_close_decodes_a_last_line_without_newline():
    stream = p.EventStream()
    assert stream.feed(p.encode_event(p.Error(message="x")).rstrip("\n")) == []
    assert [e.type for e in stream.close()] == ["error"]


def test_progress_fraction():
    assert p.Progress(stage="s", done=5, total=20).fraction == 0.25
    assert p.Progress(stage="s", done=5).fraction is None


def test_result_paths_by_role():
    result = p.Result(files=[p.ResultFile("/h.tif", "heatmap"), p.ResultFile("/v.gpkg", "vectors")])
    assert result.paths("heatmap") == ["/h.tif"]
    assert result.paths() == ["/h.tif", "/v.gpkg"]


def test_requests_round_trip_and_bare_words():
    line = p.run_request("q7", {"kind": "localize", "queries": ["a lake"]})
    assert p.decode_request(line) == p.Request("run", "q7", {"kind": "localize", "queries": ["a lake"]})
    assert p.decode_request(p.cancel_request("q7")) == p.Request("cancel", "q7")
    assert p.decode_request(p.cancel_request()) == p.Request("cancel")
    assert p.decode_request(b"cancel\n") == p.Request("cancel")
    assert p.decode_request("shutdown") == p.Request("shutdown")
    assert p.decode_request("\n") is None


@pytest.mark.parametrize("line, words", [
    ("stop please", "not a request"),
    ('{"request": "explode"}', "unknown request"),
    ('{"request": "run", "id": "x"}', "needs a \"spec\""),
    ("[]", "JSON object"),
])
def test_bad_requests_raise_readable_errors(line, words):
    with pytest.raises(ValueError, match=words):
        p.decode_request(line)


def test_protocol_module_imports_only_the_standard_library():
    tree = ast.parse(PROTOCOL_FILE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])

    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_protocol_loads_alone_as_the_qgis_plugin_does(tmp_path):
    """Copied out of the package and imported by a bare Python, it works and pulls in nothing else."""
    import shutil
    import subprocess

    shutil.copy(PROTOCOL_FILE, tmp_path / "rsvlm_protocol.py")
    code = (
        "import sys\n"
        "sys.path.insert(0, '.')\n"
        "import rsvlm_protocol as p\n"
        "s = p.EventStream()\n"
        "events = s.feed(b'{\"event\":\"progress\",\"job\":\"a\",\"stage\":\"s\",\"done\":1,\"total\":2}\\n')\n"
        "assert events[0].fraction == 0.5, events\n"
        "print(p.run_request('a', {'kind': 'localize'}), end='')\n"
        "foreign = sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names\n"
        "                 and m.split('.')[0] not in ('rsvlm_protocol', '__main__', '__mp_main__'))\n"
        "assert not foreign, foreign\n"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"request": "run", "id": "a", "spec": {"kind": "localize"}}


def test_an_endless_line_is_dropped_without_eating_memory(monkeypatch, caplog):
    monkeypatch.setattr(p, "MAX_LINE_BYTES", 100)
    stream = p.EventStream()
    with caplog.at_level(logging.WARNING):
        assert stream.feed(b"x" * 80) == []
        assert stream.feed(b"y" * 80) == []
        assert stream.feed(b"z" * 10 + b"\n" + p.encode_event(p.Cancelled()).encode()) == [p.Cancelled()]
    assert "longer than 100 bytes" in caplog.text
