"""`rsvlm worker [SPEC.json | -]` and `rsvlm worker --serve`: the process front ends drive."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run a job spec and write JSON-lines events to stdout (hello, started, progress, log, result |
error | cancelled); nothing else is written to stdout. Cancel with SIGTERM or a `cancel` line on
stdin: the job stops at its next batch, keeps what it finished, and exits with status 3.

--serve keeps the process (and every model it loads) alive and answers requests from stdin, one
JSON object per line: {"request": "run", "id": "q1", "spec": {...}}, {"request": "cancel",
"id": "q1"}, {"request": "shutdown"}. See docs/jobs.md.

exit status: 0 done, 2 bad spec or input, 3 cancelled, 1 internal error
"""


def register(tree) -> None:
    parser = tree.command("worker", run, help="run job specs for a front end (JSON-lines events on stdout)",
                          description=DESCRIPTION)
    parser.add_argument("spec", nargs="?", metavar="SPEC.json",
                        help="job spec file, or - to read it from stdin")
    parser.add_argument("--serve", action="store_true",
                        help="persistent mode: answer run requests from stdin with models loaded once")
    parser.add_argument("--id", default="job", metavar="ID", help="job id carried by the events (default: job)")


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.errors import UserError

    if args.serve == bool(args.spec):
        raise UserError("give a job spec file (or -) to run once, or --serve for persistent mode")
    from rs_vlm_app.jobs import worker

    if args.serve:
        return worker.serve()
    return worker.run_once(args.spec, job_id=args.id)
