"""Run a job spec in-process for a CLI command: progress bars on stderr, or raw events (``--json``).

Long commands build a job spec from their arguments and call :func:`run_spec`; the job then
reports exactly as it does in a worker, and the terminal shows the same events as progress bars
(rich on a terminal, sparse plain lines otherwise). Ctrl-C asks the job to stop at its next batch
(finished work is kept); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import sys
import threading

from rs_vlm_app.commands.console import (  # noqa: F401 - the one terminal renderer; tests import it here
    CANCELLED_TEXT,
    STOPPING_TEXT,
    EventConsole,
    ctrl_c_cancels,
)
from rs_vlm_app.commands.options import model_spec_from_args  # noqa: F401 - commands import it from here
from rs_vlm_app.errors import EXIT_USER_ERROR, UserError
from rs_vlm_app.jobs import protocol
from rs_vlm_app.jobs.runner import Outcome, run_job
from rs_vlm_app.jobs.specs import JobSpec


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the job's events as JSON lines on stdout (for scripts; see docs/jobs.md) "
                             "instead of progress bars")


def run_spec(spec: JobSpec, args: argparse.Namespace, stopping: str = STOPPING_TEXT) -> Outcome:
    """Run ``spec`` here; ``args.json`` selects raw events on stdout, else progress on stderr.

    Ctrl-C or SIGTERM asks the job to stop at its next batch (``stopping`` says so on stderr); a
    second one stops at once."""
    cancel = threading.Event()
    if getattr(args, "json", False):
        from rs_vlm_app.jobs.runner import hello
        from rs_vlm_app.jobs.worker import EventWriter, protect_stdout

        emit = EventWriter(protect_stdout(), on_broken=cancel.set)
        try:
            spec.check()  # input mistakes answer before torch is imported for hello's device line
        except UserError as exc:
            emit(protocol.Error(message=str(exc), kind="user"))
            return Outcome("error", EXIT_USER_ERROR, protocol.Error(message=str(exc), kind="user"))
        emit(hello("inprocess"))
        with ctrl_c_cancels(cancel, None):
            return run_job(spec, emit, cancel=cancel, checked=True)
    console = EventConsole(sys.stderr, verbose=getattr(args, "verbose", False))
    try:
        with ctrl_c_cancels(cancel, stopping):
            return run_job(spec, console, cancel=cancel)
    finally:
        console.close()
