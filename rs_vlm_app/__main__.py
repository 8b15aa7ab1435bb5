"""`python -m rs_vlm_app ...` is the same as the `rsvlm` command."""

import sys

from rs_vlm_app.cli import main

sys.exit(main())
