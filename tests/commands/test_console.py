"""The one terminal renderer: engine functions called straight from a command (demo, dataset export)
report and cancel exactly like job runs."""

from __future__ import annotations

import argparse
import io
import os
import signal

from rs_vlm_app.commands import dataset
from rs_vlm_app.commands.console import console_reporter
from rs_vlm_app.errors import EXIT_CANCELLED
from rs_vlm_app.reporting import check_cancelled


def test_console_reporter_renders_progress_like_a_job_run():
    stream = io.StringIO()
    with console_reporter(stream=stream) as reporter:
        reporter.progress("export", 0, 4)
        reporter.progress("export", 4, 4)
        reporter.log("wrote 4 captions")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "export: 0/4" and lines[1].startswith("export: 4/4 (") and lines[2] == "wrote 4 captions"


def test_dataset_export_stops_on_sigterm(monkeypatch, tmp_path, capsys):
    """SIGTERM (or Ctrl-C) reaches the export's reporter: it stops at its next check and exits 3."""
    seen = []

    def exporting(target, fmt, *, reporter, **options):
        for done in range(100):
            reporter.progress("export", done, 100)
            check_cancelled(reporter)  # what export_dataset does after each batch of rows
            seen.append(done)
            if done == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a front end's cancel would
        raise AssertionError("the export was not cancelled")

    monkeypatch.setattr("rs_vlm_app.mpgi.export.export_dataset", exporting)
    before = signal.getsignal(signal.SIGTERM)
    args = argparse.Namespace(dataset=tmp_path, format="csv", output=None, exclude_flagged=False, relative_to=None,
                              csv_separator=",", samples_per_shard=1000, wds_layout="per-caption")
    assert dataset.run_export(args) == EXIT_CANCELLED
    assert seen == [0, 1, 2]  # stopped at the first check after the signal
    err = capsys.readouterr().err
    assert "stopping the export" in err and "rsvlm: cancelled; the export is not finished" in err
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again
