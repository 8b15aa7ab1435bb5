"""The dataset and training windows without a worker: the form and its YAML, bad input (one message,
nothing started), a run folder opened for watching, the Tools menu."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from rs_vlm_app.mpgi.config import load_config
from rs_vlm_app.training.config import TrainConfig
from rs_vlm_app.training.metrics_log import MetricsLog
from rs_vlm_app.training.rundir import write_run_json, write_summary
from tests.mpgi import data
from tests.mpgi.fakechat import FakeChatServer


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def fill_dataset_form(form, output: Path, root: Path, base_url: str) -> None:
    """What a user types: the folder, one source, the endpoint and its model, two perspectives, a plan."""
    form.output.setText(str(output))
    form.add_source({"type": "folder", "root": str(root)})
    form.backends.item(0, 1).setText(base_url)
    form.backends.item(0, 2).setText("fake")
    form.backends.item(0, 4).setText("2")
    form.set_perspectives({"scene": None, "objects": None})
    form.set_caption_plan([{"name": "short", "words": 8, "count": 1}, {"name": "long", "words": 20, "count": 1}])
    form.quality["duplicates"].setCurrentText("off")
    form.quality["length"].setCurrentText("off")


def test_tools_menu_and_open_run_entry(window):
    menus = {a.text(): a.menu() for a in window.menuBar().actions()}
    assert [a.text() for a in menus["T&ools"].actions()] == ["Build &dataset…", "&Fine-tune…"]
    assert "Open &run…" in [a.text() for a in menus["&File"].actions()]
    assert list(menus)[-1] == "&Help"


def test_the_form_saves_the_yaml_the_cli_reads_and_loads_it_back(qtbot, window, tmp_path):
    data.class_folders(tmp_path / "AID", {"forest": 2, "river": 1})
    dataset = window.tools.dataset_window()
    form = dataset.form
    fill_dataset_form(form, tmp_path / "ds", tmp_path / "AID", "http://127.0.0.1:9/v1")
    form.add_backend("vision", {"type": "openai", "base_url": "http://127.0.0.1:8001/v1", "model": "qwen-vl",
                                "api_key_env": "MY_KEY", "concurrency": 8})
    form.set_perspectives({"scene": "vision", "objects": None})
    form.relay_chain.setText("vision")
    qtbot.waitUntil(lambda: form.source_counts()[0][1] == 3, timeout=10000)
    assert form.sources.item(0, 2).text() == "3 images"
    path = tmp_path / "build.yaml"
    assert dataset.save_file(path)
    config = load_config(path)  # what `rsvlm dataset build build.yaml` reads
    assert config.output == tmp_path / "ds" and config.sources[0].root == tmp_path / "AID"
    assert config.backends["vision"].api_key_env == "MY_KEY" and config.backends["vision"].concurrency == 8
    assert config.backends["server"].concurrency == 2
    assert config.relay.backends() == ["server", "vision"]
    assert [(p.prompt, p.backend) for p in config.perspectives.prompts] == [("scene", "vision"), ("objects", None)]
    assert [(s.name, s.words) for s in config.integration.captions] == [("short", 8), ("long", 20)]
    assert config.quality.duplicates == "off"
    # a second window shows the same configuration
    other = type(dataset)(window.jobs)
    qtbot.addWidget(other)
    assert other.load_file(path)
    for key in ("prompts", "backend"):
        assert other.form.config_dict()["perspectives"][key] == form.config_dict()["perspectives"][key]
    assert other.form.relay_chain.text() == "vision"
    assert load_config(path).to_dict() == config.to_dict()


def test_bad_dataset_input_is_one_message_and_nothing_starts(qtbot, window, tmp_path):
    dataset = window.tools.dataset_window()
    (tmp_path / "empty").mkdir()
    fill_dataset_form(dataset.form, tmp_path / "ds", tmp_path / "empty", "http://127.0.0.1:9/v1")
    qtbot.waitUntil(lambda: dataset.form.source_counts()[0][1] == 0, timeout=10000)
    assert dataset.form.sources.item(0, 2).text() == "no images found"
    assert dataset.messages.last() == ("error", f"{tmp_path / 'empty'}: no images found in this source")
    dataset.start()
    assert dataset.messages.last()[1] == f"{tmp_path / 'empty'}: no images found in this source. Nothing was started."
    assert window.jobs.jobs == []

    # a backend that does not answer: "Test" says so, and Start refuses
    data.class_folders(tmp_path / "AID", {"forest": 1})
    dataset.form.sources.setRowCount(0)
    dataset.form.add_source({"type": "folder", "root": str(tmp_path / "AID")})
    url = dead_url()
    dataset.form.backends.item(0, 1).setText(url)
    dataset.form.test_backend("server")
    qtbot.waitUntil(lambda: dataset.form.test_button.isEnabled(), timeout=20000)
    assert "is not reachable" in dataset.form.test_answer.text() and url in dataset.form.test_answer.text()
    dataset.start()
    qtbot.waitUntil(lambda: dataset.start_button.isEnabled(), timeout=20000)
    level, text = dataset.messages.last()
    assert level == "error" and "is not reachable" in text and text.endswith("Nothing was started.")
    assert window.jobs.jobs == [] and not (tmp_path / "ds" / "manifest.sqlite").exists()

    # a YAML with an unknown key: one line naming the file and the key, the form unchanged
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**dataset.form.config_dict(), "perspectivs": ["scene"]}))
    before = dataset.form.config_dict()
    assert not dataset.load_file(bad)
    level, text = dataset.messages.last()
    assert level == "error" and text.startswith(f"{bad}: perspectivs: unknown key")
    assert dataset.form.config_dict() == before


def test_test_button_shows_the_endpoints_answer(qtbot, window):
    dataset = window.tools.dataset_window()
    with FakeChatServer() as server:
        dataset.form.backends.item(0, 1).setText(server.base_url)
        dataset.form.test_backend()
        qtbot.waitUntil(lambda: dataset.form.test_button.isEnabled(), timeout=20000)
    assert "answers" in dataset.form.test_answer.text() and "“OK”" in dataset.form.test_answer.text()


def test_a_run_folder_holding_another_run_is_refused(qtbot, window, tmp_path):
    from tests.training import synthetic

    train = synthetic.write_csv_dataset(tmp_path / "shapes", 4)
    run = tmp_path / "run"
    run.mkdir()
    write_run_json(TrainConfig(task="clip", data=str(train), output_dir=str(run), model="RN50"), world_size=1)
    training = window.tools.training_window()
    training.data.setText(str(train))
    training.out.setText(str(run))
    training.arch.setCurrentText("ViT-B-32")
    training.start()
    qtbot.waitUntil(lambda: training.start_button.isEnabled(), timeout=20000)
    level, text = training.messages.last()
    assert level == "error" and text.startswith(f"{run}: already holds a different training run")
    assert text.endswith("Nothing was started.") and window.jobs.jobs == []


def test_open_run_watches_a_cli_run_and_its_curves(qtbot, window, tmp_path):
    run = tmp_path / "cli-run"
    config = TrainConfig(task="clip", data=str(tmp_path / "train.csv"), output_dir=str(run), epochs=2, lr=1e-3)
    run.mkdir()
    write_run_json(config, world_size=1)
    log = MetricsLog(run, enabled=True, tensorboard=False)
    log.train(1, {"epoch": 1, "lr": 1e-3, "contrastive_loss": 2.0, "loss": 2.0})
    training = window.tools.training_window()
    assert not training.open_run(tmp_path)  # not a run folder
    assert training.messages.last() == ("error", f"{tmp_path}: holds no rs-vlm training run (no run.json). "
                                                 "Nothing was opened.")
    assert training.open_run(run)
    assert training.curves.series() == {"loss": 1, "lr": 1}  # CLIP's one loss component is not drawn twice
    assert training.resume_button.isEnabled() and not training.use_button.isEnabled()
    assert training.spec(resume=True)["lr"] == 1e-3 and training.spec()["epochs"] == 2
    log.train(2, {"epoch": 1, "lr": 5e-4, "contrastive_loss": 1.5, "loss": 1.5})
    log.evaluation(2, 1, {"retrieval/mean_recall": 20.0})
    qtbot.waitUntil(lambda: training.curves.series().get("eval/retrieval/mean_recall") == 1, timeout=5000)
    assert training.curves.series()["loss"] == 2
    (run / "model.safetensors").write_bytes(b"x")
    (run / "model_config.json").write_text("{}")
    write_summary(run, {"finished": True, "steps": 2, "model": "model.safetensors", "model_config": "model_config.json"})
    qtbot.waitUntil(lambda: training.use_button.isEnabled(), timeout=5000)
    assert not training.resume_button.isEnabled()


def test_a_build_made_from_the_terminal_opens_with_its_gallery_and_status(qtbot, window, tmp_path):
    from rs_vlm_app.mpgi.pipeline import build_dataset

    data.class_folders(tmp_path / "AID", {"forest": 2, "river": 1})
    with FakeChatServer() as server:
        config = data.build_config(tmp_path / "ds", [{"type": "folder", "root": str(tmp_path / "AID")}],
                                   data.openai_backend(server.base_url, "fake"))
        path = data.write_config(tmp_path / "build.yaml", config)
        server.rule = lambda body, n: ("status", 400) if "river" in str(body) else None
        from rs_vlm_app.mpgi.config import load_config as load

        build_dataset(load(path))  # what `rsvlm dataset build build.yaml` does
    dataset = window.tools.dataset_window()
    assert dataset.load_file(path)
    qtbot.waitUntil(lambda: dataset.reads >= 1, timeout=10000)
    assert dataset.summary.text().startswith("2 of 3 images done · 1 failed")
    captions = dataset.gallery_captions()
    assert sorted(captions) == ["AID/forest/forest_0.png", "AID/forest/forest_1.png"]
    assert all(text.startswith("Reply ") and text.endswith("2 keep") for text in captions.values())
    dataset.show_image("AID/forest/forest_1.png")
    detail = dataset.detail.toPlainText()
    assert "Perspective: scene" in detail and "short [keep]" in detail and "The scene is classified as forest." in detail
    status = dataset.failures.toPlainText()
    assert "AID/river/river_0.png relay: " in status and "400" in status
    assert dataset.start_button.text() == "Resume" and dataset.export_button.isEnabled()
    assert not dataset.timer.isActive()  # nothing builds it any more: no reads until Start


def test_perspectives_of_the_users_prompt_folder_are_listed_first(window, tmp_path):
    from rs_vlm_app.mpgi.config import BuildConfig
    from rs_vlm_app.mpgi.plan import load_plan
    from rs_vlm_app.mpgi.prompts import builtin_prompts_dir

    prompts = tmp_path / "prompts"
    (prompts / "perspectives").mkdir(parents=True)
    for name in ("relay", "integration"):
        (prompts / f"{name}.yaml").write_text((builtin_prompts_dir() / f"{name}.yaml").read_text())
    (prompts / "perspectives" / "water.yaml").write_text(
        "kind: perspective\ndescription: Water bodies.\nuser: Describe the water in this image.\n")
    data.class_folders(tmp_path / "AID", {"lake": 1})
    form = window.tools.dataset_window().form
    fill_dataset_form(form, tmp_path / "ds", tmp_path / "AID", "http://127.0.0.1:9/v1")
    form.prompts_dir.setText(str(prompts))
    form.prompts_dir.editingFinished.emit()
    rows = [(form.perspectives.item(r, 0).text(), form.perspectives.item(r, 1).text())
            for r in range(form.perspectives.rowCount())]
    assert ("water", "Water bodies. (your prompts)") in rows
    assert {name for name, text in rows if text.endswith("(shipped)")} >= {"scene", "objects", "spatial", "context"}
    scene = str(builtin_prompts_dir() / "perspectives" / "scene.yaml")
    form.set_perspectives({"water": None, scene: None})
    config = BuildConfig.from_dict(form.config_dict(), origin="the form")
    assert config.prompts_dir == prompts
    assert [p.name for p in load_plan(config).perspectives] == ["water", "scene"]
