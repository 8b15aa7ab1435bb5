"""Every kind of job, end to end with tiny models: in a worker process or through run_job in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from pyogrio import read_info
from pyogrio.raw import read

from rs_vlm_app.jobs import protocol
from rs_vlm_app.jobs.runner import run_job
from rs_vlm_app.jobs.specs import spec_from_dict
from rs_vlm_app.models.cache import ModelCache
from tests.geo import rasters
from tests.jobs.workerproc import WorkerProc, write_spec

pytestmark = pytest.mark.slow


def model_of(tiny) -> dict:
    return {"model_config": str(tiny["config"]), "checkpoint": str(tiny["checkpoint"]), "device": "cpu"}


@pytest.fixture
def scene(tmp_path) -> Path:
    """A 256 x 256 georeferenced crop of the NAIP sample (RGB)."""
    with rasterio.open(rasters.NAIP) as src:
        data = src.read((1, 2, 3), window=((100, 356), (200, 456)))
        transform = src.window_transform(((100, 356), (200, 456)))
        crs = src.crs
    return rasters.write(tmp_path / "scene.tif", data, crs=crs.to_string(), transform=transform)


def read_layer(path: Path, layer: str) -> dict[str, np.ndarray]:
    meta, _fids, _geometry, fields = read(path, layer=layer, read_geometry=False)
    return dict(zip(meta["fields"], fields, strict=True))


def run_in_process(spec: dict, models: ModelCache | None = None):
    events: list[protocol.Event] = []
    outcome = run_job(spec_from_dict(spec), events.append, job_id="t", models=models)
    assert outcome.status == "ok", outcome.final
    final = events[-1]
    assert final.type == "result" and final.kind == spec["kind"]
    for f in final.files:
        assert Path(f.path).exists(), f.path
    return final, events


def run_in_worker(spec: dict, tmp_path: Path) -> protocol.Event:
    worker = WorkerProc("worker", str(write_spec(tmp_path / "job.json", spec)), "--id", "w")
    assert worker.wait() == 0, worker.stderr[-3000:]
    final = worker.events[-1]
    assert final.type == "result" and final.kind == spec["kind"], final
    for f in final.files:
        assert Path(f.path).exists(), f.path
    return final


def test_caption_in_a_worker_writes_a_tiles_layer_with_captions(taught_coca, tiny_clip, scene, tmp_path):
    spec = {"kind": "caption", "scene": str(scene), "out": str(tmp_path / "captions.gpkg"),
            "model": model_of(taught_coca), "clip_model": model_of(tiny_clip), "grid": "128",
            "decoding": "greedy", "max_len": 12}
    result = run_in_worker(spec, tmp_path)
    [tiles] = result.files
    assert tiles.role == "tiles" and tiles.layers == ["captions"]
    table = read_layer(tiles.path, layer="captions")
    assert len(table["caption"]) == 4 == result.summary["tiles"] == result.summary["decoded_now"]
    assert set(table["caption"]) == {taught_coca["sentence"]}
    assert np.isfinite(table["clip_score"]).all()
    assert result.summary["common_captions"] == [[taught_coca["sentence"], 4]]
    assert result.summary["model_loads"] == 2  # the CoCa and the CLIP
    assert read_info(tiles.path, layer="captions")["crs"] == "EPSG:26914"


def test_classify_with_inline_classes_in_a_worker(tiny_clip, scene, tmp_path):
    out = tmp_path / "classes"
    spec = {"kind": "classify", "scene": str(scene), "classes": ["lake", "forest = a dense forest", "road"],
            "out": str(out), "model": model_of(tiny_clip), "grid": "128", "top_k": 2}
    result = run_in_worker(spec, tmp_path)
    by_role = {(f.role, Path(f.path).name) for f in result.files}
    assert by_role == {("classes", "classes.tif"), ("style", "classes.qml"), ("raster", "probabilities.tif"),
                       ("tiles", "tiles.gpkg"), ("report", "classify.json"), ("file", "classes.txt")}
    assert result.summary["classes"] == ["lake", "forest", "road"]
    assert sum(result.summary["area_share"].values()) == pytest.approx(1.0)
    tiles = read_layer(out / "tiles.gpkg", layer="tiles")
    assert len(tiles["class_1"]) == 4 and set(tiles["class_1"]) <= {"lake", "forest", "road"}
    assert (tiles["prob_1"] >= tiles["prob_2"]).all()
    assert (out / "classes.txt").read_text() == "lake\nforest = a dense forest\nroad\n"
    with rasterio.open(out / "classes.tif") as ds, rasterio.open(scene) as src:
        assert ds.crs == src.crs and ds.bounds == pytest.approx(src.bounds)


def test_search_ranks_the_tiles_of_a_scene(tiny_clip, scene, tmp_path):
    spec = {"kind": "search", "scenes": [str(scene)], "query": "a lake", "out": str(tmp_path / "hits.gpkg"),
            "model": model_of(tiny_clip), "grid": "64", "top_k": 5}
    result, events = run_in_process(spec)
    assert [(f.role, Path(f.path).name) for f in result.files] == [("tiles", "hits.gpkg"), ("file", "hits.png")]
    hits = read_layer(tmp_path / "hits.gpkg", layer="results")
    assert list(hits["rank"]) == [1, 2, 3, 4, 5] and list(hits["score"]) == sorted(hits["score"], reverse=True)
    assert [h["score"] for h in result.summary["hits"]] == pytest.approx(list(hits["score"]))
    assert any(isinstance(e, protocol.Progress) and e.stage == "encode tiles" for e in events)


def class_folders(root: Path) -> Path:
    for name, colour in (("Lake", (0, 0, 200)), ("Forest", (0, 150, 0))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), tuple(c + 10 * i for c in colour)).save(root / name / f"{i}.png")
    return root


def test_zeroshot_and_retrieval_evaluations_share_one_model(tiny_clip, tmp_path):
    data = class_folders(tmp_path / "data")
    csv = tmp_path / "captions.csv"
    csv.write_text("filepath,caption\n" + "".join(f"data/{c}/{i}.png,a photo of a {c.lower()}\n"
                                                  for c in ("Lake", "Forest") for i in range(2)))
    pool = ModelCache()
    zeroshot, _ = run_in_process({"kind": "eval-zeroshot", "data": str(data), "out": str(tmp_path / "z"),
                                  "model": model_of(tiny_clip)}, pool)
    assert {(f.role, Path(f.path).name) for f in zeroshot.files} == {
        ("report", "zeroshot.json"), ("table", "zeroshot.csv"), ("table", "confusion.csv"), ("file", "confusion.png")}
    assert zeroshot.summary["images"] == 4 and sum(map(sum, zeroshot.summary["confusion"])) == 4
    retrieval, _ = run_in_process({"kind": "eval-retrieval", "data": str(csv), "out": str(tmp_path / "r"),
                                   "model": model_of(tiny_clip)}, pool)
    assert retrieval.summary["images"] == 4 and 0 <= retrieval.summary["mean_recall"] <= 100
    assert json.loads((tmp_path / "r" / "retrieval.json").read_text())["mean_recall"] == retrieval.summary["mean_recall"]
    assert retrieval.summary["model_loads"] == 1 and pool.loads == 1


def test_caption_metrics_run_as_a_job(tmp_path):
    (tmp_path / "pred.json").write_text(json.dumps({"1": "many trees near a lake", "2": "a road"}))
    (tmp_path / "refs.csv").write_text("image_id,caption\n1,many trees near a lake\n2,a straight road\n2,road\n")
    result, _ = run_in_process({"kind": "eval-caption", "pred": str(tmp_path / "pred.json"),
                                "refs": str(tmp_path / "refs.csv"), "out": str(tmp_path / "out"), "spice": False})
    assert [f.role for f in result.files] == ["report", "table", "table"]
    assert result.summary["images"] == 2 and result.summary["metrics"]["BLEU-1"] > 0.5
    assert "SPICE" in result.summary["skipped"]


def test_dataset_build_runs_as_a_job_and_resumes(tmp_path):
    from tests.mpgi import data
    from tests.mpgi.fakechat import FakeChatServer

    data.class_folders(tmp_path / "AID", {"forest": 2, "river": 1})
    with FakeChatServer() as server:
        config = data.build_config(tmp_path / "ignored", [{"type": "folder", "root": str(tmp_path / "AID")}],
                                   data.openai_backend(server.base_url, "fake"))
        path = data.write_config(tmp_path / "build.yaml", config)
        spec = {"kind": "dataset-build", "config": str(path), "out": str(tmp_path / "ds")}
        result, events = run_in_process(spec)
        again, _ = run_in_process(spec)
    assert [(f.role, Path(f.path).name) for f in result.files] == [("folder", "ds"), ("file", "manifest.sqlite")]
    assert result.summary["status"] == "completed" and result.summary["images"] == 3
    assert result.summary["images_added"] == 3 and again.summary["images_added"] == 0
    assert again.summary["requests"] == 0  # everything was done: the second build asks nothing
    assert any(isinstance(e, protocol.Progress) for e in events)


def test_fine_tune_runs_as_a_job_and_lists_its_model(tiny_clip, tmp_path):
    from tests.training import synthetic

    train = synthetic.write_csv_dataset(tmp_path / "shapes", 32, seed=0)
    spec = {"kind": "fine-tune", "task": "clip", "data": str(train), "out": str(tmp_path / "run"),
            "model_config": str(tiny_clip["config"]), "init": str(tiny_clip["checkpoint"]), "batch_size": 16,
            "lr": 1e-3, "warmup": 1, "workers": 0, "log_every": 1, "save_every": 0, "tensorboard": False,
            "device": "cpu"}
    result, events = run_in_process(spec)
    roles = {f.role: Path(f.path).name for f in result.files}
    assert roles["checkpoint"] == "model.safetensors" and roles["folder"] == "run" and roles["report"] == "summary.json"
    assert result.summary["finished"] and result.summary["steps"] == result.summary["total_steps"] == 2
    train_progress = [e for e in events if isinstance(e, protocol.Progress) and e.stage == "train"]
    assert train_progress and train_progress[-1].done == 2


def test_serve_mode_reuses_models_across_kinds(tiny_clip, tiny_coca, scene, tmp_path):
    worker = WorkerProc("worker", "--serve")
    worker.wait_for(lambda e: e.type == "hello")
    clip = model_of(tiny_clip)
    worker.send(protocol.run_request("loc", {"kind": "localize", "scene": str(scene), "queries": ["a lake"],
                                             "out": str(tmp_path / "loc"), "model": clip, "grid": "128"}))
    assert worker.final("loc").summary["model_loads"] == 1
    worker.send(protocol.run_request("cls", {"kind": "classify", "scene": str(scene), "classes": "eurosat",
                                             "out": str(tmp_path / "cls"), "model": clip, "grid": "128"}))
    assert worker.final("cls").summary["model_loads"] == 1  # the same CLIP, not loaded again
    caption = {"kind": "caption", "scene": str(scene), "out": str(tmp_path / "cap.gpkg"), "model": model_of(tiny_coca),
               "clip_model": clip, "grid": "128", "decoding": "greedy", "max_len": 5}
    worker.send(protocol.run_request("cap", caption))
    first = worker.final("cap")
    assert first.type == "result", worker.stderr[-2000:]
    assert first.summary["model_loads"] == 2  # only the CoCa is new
    worker.send(protocol.run_request("cap2", caption))
    second = worker.final("cap2")
    assert second.summary["model_loads"] == 2 and second.summary["decoded_now"] == 0  # from the checkpoint
    worker.send("shutdown")
    assert worker.wait() == 0


def test_classify_reads_its_class_file_once_per_job(tiny_clip, scene, tmp_path, monkeypatch):
    from rs_vlm_app.tasks import classes as class_lists

    class_file = tmp_path / "classes.txt"
    class_file.write_text("lake\nforest = a dense forest\nroad\n")
    reads: list[str] = []
    real = class_lists.load_classes

    def counting(source, *args, **kwargs):
        reads.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(class_lists, "load_classes", counting)
    spec = {"kind": "classify", "scene": str(scene), "classes": str(class_file), "out": str(tmp_path / "cls"),
            "model": model_of(tiny_clip), "grid": "64"}
    result, _events = run_in_process(spec)
    assert reads == [str(class_file)]
    assert result.summary["classes"] == ["lake", "forest", "road"]
