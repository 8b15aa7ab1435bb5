"""Job specs the plugin sends to the worker: the shared client's builders (rs_vlm_app/jobs/client.py).

Required fields are positional, in the order of the kind's dataclass in rs_vlm_app/jobs/kinds/;
options go by their field names there; unset options (None) take the worker's defaults.
docs/jobs.md is the reference.
"""

from __future__ import annotations

from .jobproto import client

localize = client.localize_spec
caption = client.caption_spec
classify = client.classify_spec
search = client.search_spec
archive_search = client.archive_search_spec
dataset_build = client.dataset_build_spec
fine_tune = client.fine_tune_spec
model = client.model_spec
