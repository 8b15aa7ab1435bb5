"""MpGI dataset build: rules -> MLLM relay and perspectives -> LLM integration -> quality -> export.

Library entry points (the CLI, the jobs layer, the GUI all use these)::

    from rs_vlm_app.mpgi import load_config, build_dataset, dataset_status, export_dataset, merge_shards

    config = load_config("build.yaml")          # or BuildConfig.from_dict(job_spec["config"])
    summary = build_dataset(config, reporter=reporter)

See docs/dataset.md for the configuration and the commands.
"""

from rs_vlm_app.mpgi.config import BuildConfig, Shard, load_config
from rs_vlm_app.mpgi.export import export_dataset
from rs_vlm_app.mpgi.merge import merge_shards
from rs_vlm_app.mpgi.pipeline import BuildSummary, build_dataset
from rs_vlm_app.mpgi.status import dataset_status

__all__ = ["BuildConfig", "BuildSummary", "Shard", "build_dataset", "dataset_status", "export_dataset",
           "load_config", "merge_shards"]
