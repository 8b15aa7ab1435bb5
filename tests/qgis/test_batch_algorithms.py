"""Build dataset and Fine-tune: long batch jobs, each in a one-shot worker of its own (never the
panel's persistent worker), with bad input reported as one readable line."""

from __future__ import annotations

import subprocess

import processing
import pytest
from processing.core.Processing import Processing
from qgis.core import QgsApplication, QgsProcessingException

from tests.qgis.conftest import app_checkout, app_env, app_python, need_kind, run_app

# A fake OpenAI-compatible chat server (tests/mpgi/fakechat.py) in the app's environment, and a
# build config over six small class-folder images that uses it; prints the config's path, then
# serves until its stdin closes.
FAKE_SERVER = """
import json, sys
from pathlib import Path
from tests.mpgi import data
from tests.mpgi.fakechat import FakeChatServer
folder = Path(sys.argv[1])
server = FakeChatServer(lambda body: "a dense green forest beside a winding river").start()
data.class_folders(folder / "AID", {"forest": 3, "river": 3})
config = data.build_config(folder / "dataset", [{"type": "folder", "root": str(folder / "AID")}],
                           data.openai_backend(server.base_url, "fake"))
(folder / "build.yaml").write_text(json.dumps(config))  # JSON is YAML
print(folder / "build.yaml", flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.fixture(scope="module")
def registry(plugin):
    Processing.initialize()
    return QgsApplication.processingRegistry()


@pytest.fixture
def fake_build(worker_kinds, tmp_path):
    need_kind(worker_kinds, "dataset-build")
    proc = subprocess.Popen([str(app_python()), "-c", FAKE_SERVER, str(tmp_path)], cwd=app_checkout(),
                            env=app_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.stdin.close()
        proc.wait(30)


@pytest.fixture(scope="module")
def captions_csv(worker_kinds, tmp_path_factory) -> str:
    need_kind(worker_kinds, "fine-tune")
    folder = tmp_path_factory.mktemp("pairs")
    proc = run_app("-c", "import sys; from pathlib import Path; from tests.training import synthetic; "
                   "print(synthetic.write_csv_dataset(Path(sys.argv[1]), 32, seed=0))", str(folder))
    return proc.stdout.strip().splitlines()[-1]


def test_the_batch_algorithms_are_listed(registry):
    for algorithm_id in ("rsvlm:dataset_build", "rsvlm:fine_tune"):
        alg = registry.algorithmById(algorithm_id)
        assert alg is not None and len(alg.shortHelpString()) > 200
        assert not alg.persistent_worker


def test_build_dataset_refuses_a_config_with_a_mistake(registry, configured, tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text("output: out\nsourcez: []\n")
    with pytest.raises(QgsProcessingException, match="build.yaml.*sourcez|sourcez.*build.yaml"):
        processing.run("rsvlm:dataset_build", {"CONFIG": str(config)})
    with pytest.raises(QgsProcessingException, match="missing.yaml: file not found"):
        processing.run("rsvlm:dataset_build", {"CONFIG": str(tmp_path / "missing.yaml")})


def test_fine_tune_refuses_missing_training_data(registry, configured, tmp_path):
    with pytest.raises(QgsProcessingException, match="nothere.csv"):
        processing.run("rsvlm:fine_tune", {"DATA": str(tmp_path / "nothere.csv"), "RECIPE": "hqrs-clip",
                                           "OUTPUT": str(tmp_path / "run")})
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_build_dataset_runs_on_its_own_worker(registry, plugin, configured, fake_build, tmp_path):
    before = plugin.service.hello.pid if plugin.service.hello else None
    result = processing.run("rsvlm:dataset_build", {"CONFIG": fake_build, "OUTPUT": str(tmp_path / "ds")})
    assert result["OUTPUT"] == str(tmp_path / "ds")
    assert result["MANIFEST"].endswith("manifest.sqlite") and (tmp_path / "ds" / "manifest.sqlite").is_file()
    assert result["IMAGES"] == 6 and result["CAPTIONS"] == 12 and result["STATUS"] == "completed"
    assert (plugin.service.hello.pid if plugin.service.hello else None) == before


@pytest.mark.slow
def test_fine_tune_trial_run_then_continue(registry, configured, captions_csv, tmp_path):
    params = {"TASK": 0, "DATA": captions_csv, "MODEL_CONFIG": configured["clip"]["config"], "INIT": "none",
              "EPOCHS": 1, "BATCH_SIZE": 8, "LR": 0.001, "DEVICE": 1, "OUTPUT": str(tmp_path / "run")}
    first = processing.run("rsvlm:fine_tune", {**params, "STOP_AFTER_STEPS": 2})
    assert first["STEPS"] == 2 and first["MODEL"] is None
    assert any((tmp_path / "run" / "checkpoints").iterdir())  # the step to continue from
    second = processing.run("rsvlm:fine_tune", params)  # 32 pairs / 8 = 4 steps in all
    assert second["STEPS"] == 4
    assert second["MODEL"] == str(tmp_path / "run" / "model.safetensors")
    assert (tmp_path / "run" / "model.safetensors").is_file()

