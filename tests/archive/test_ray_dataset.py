"""rsvlm dataset build --engine ray: the MpGI shards as Ray tasks on the session's local cluster."""

from __future__ import annotations

import pytest

from rs_vlm_app.jobs.kinds.dataset_build import DatasetBuildSpec
from rs_vlm_app.jobs.runner import run_job
from tests.mpgi import data
from tests.mpgi.conftest import fake_server  # noqa: F401 - the fixture
from tests.mpgi.helpers import folder_config, ok_attempts_per_unit

pytestmark = pytest.mark.slow


def test_shards_run_as_ray_tasks_and_merge(ray_cluster, tmp_path, fake_server):  # noqa: F811
    config = folder_config(tmp_path, fake_server.base_url, images=6, perspectives=())
    path = data.write_config(tmp_path / "build.yaml", config.to_dict())
    spec = DatasetBuildSpec(config=path, engine="ray", workers=2)
    outcome = run_job(spec, lambda event: None)
    assert outcome.status == "ok", outcome.final
    summary = outcome.result.summary
    assert summary["shards"] == 2 and summary["images"] == 6 and summary["status"] == "completed"
    names = sorted(p.name for p in config.output.glob("manifest*.sqlite"))
    assert names == ["manifest-shard-1-of-2.sqlite", "manifest-shard-2-of-2.sqlite", "manifest.sqlite"]
    attempts = ok_attempts_per_unit(config.output / "manifest.sqlite")
    assert set(attempts.values()) == {1} and len({key for key, _ in attempts}) == 6  # each image once
