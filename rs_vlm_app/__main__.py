"""`python -m rs_vlm_app ...` is the same as the `rsvlm` command."""

from rs_vlm_app.cli import run

run()
