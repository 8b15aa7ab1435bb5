"""``run_demo``: the whole mission offline on a synthetic world, stage by stage, resumable.

world     an evaluation world and a separate training world (GeoTIFF, annotations, masks) and an
          AIR-SLT-style SeLo benchmark folder of the evaluation scene with one sample per query
dataset   training tiles of the training world, captioned by the MpGI rule stage (open_clip CSV)
train     a small CLIP from random weights (rs_vlm_app.training); its initial weights are kept as
          the "untrained" baseline of the same architecture
localize  each query on the evaluation scene, trained and untrained: heat maps + hot spots
classify  zero-shot class maps of the evaluation scene, scored against the true masks
selo      Rsu, Ras, Rda, Rmi of both models on the benchmark (rs_vlm_app.evaluation.selo)
report    figures, report.html and demo.json

Each finished stage is recorded in OUTDIR/demo_state.json; running again skips it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.demo.state import DemoState
from rs_vlm_app.demo.world import CLASSES, QUERIES, WorldSpec
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.resources import resource

log = logging.getLogger(__name__)

STAGES = ("world", "dataset", "train", "localize", "classify", "selo", "report")
MODELS = ("trained", "untrained")
MODEL_CONFIG = "rsvlm-demo-clip.json"
#: The classify stage's class list (resources/demo/classes.txt) in file order; "open land" = no object.
CLASSIFY_LABELS = (*CLASSES, "open land")


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds; a folder keeps the settings it was made with."""

    seed: int = 0
    scene_size: int = 2048       # evaluation scene, pixels a side
    train_size: int = 2048       # training scene, pixels a side
    pixel_m: float = 0.5
    tiles: int = 3000            # training tiles
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    grid: str = "128,256@0.5"    # tile windows for localization, classification and SeLo

    @classmethod
    def full(cls, seed: int = 0) -> DemoSettings:
        return cls(seed=seed)

    @classmethod
    def quick(cls, seed: int = 0) -> DemoSettings:
        """A smaller world and a shorter training (tests, a first look): about a third of the time."""
        return cls(seed=seed, scene_size=1024, train_size=1024, tiles=1200, epochs=4)

    def eval_spec(self) -> WorldSpec:
        return WorldSpec(size=self.scene_size, pixel_m=self.pixel_m, seed=self.seed)

    def train_spec(self) -> WorldSpec:
        east = WorldSpec().origin[0] + self.scene_size * self.pixel_m + 500.0
        return WorldSpec(size=self.train_size, pixel_m=self.pixel_m, seed=self.seed + 1000,
                         origin=(east, WorldSpec().origin[1]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    summary: Path
    metrics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class Demo:
    """The stages of one demo folder; see the module docstring."""

    def __init__(self, out_dir: Path, settings: DemoSettings, reporter: Reporter, device: str = "auto"):
        self.out = Path(out_dir)
        self.settings = settings
        self.reporter = reporter
        self.device = device
        self._encoders: dict[str, Any] = {}
        self._cache = None

    # --- paths ------------------------------------------------------------------------------------
    @property
    def scene(self) -> Path:
        return self.out / "world" / "eval.tif"

    @property
    def benchmark(self) -> Path:
        return self.out / "world" / "selo_benchmark"

    @property
    def run_dir(self) -> Path:
        return self.out / "model" / "run"

    def checkpoint(self, model: str) -> Path:
        return self.run_dir / "model.safetensors" if model == "trained" else self.out / "model" / "untrained.safetensors"

    @property
    def model_config(self) -> Path:
        return self.run_dir / "model_config.json"

    def queries(self) -> list[str]:
        return [QUERIES[c] for c in CLASSES]

    # --- stages -----------------------------------------------------------------------------------
    def world(self) -> dict[str, Any]:
        from rs_vlm_app.demo.world import generate_world, write_world

        records = {}
        for stem, spec in (("eval", self.settings.eval_spec()), ("train", self.settings.train_spec())):
            self.reporter.progress("generate worlds", len(records), 2)
            world = generate_world(spec)
            write_world(world, self.out / "world", stem)
            records[stem] = {c: len(world.objects_of(c)) for c in CLASSES}
            if stem == "eval":
                self._write_benchmark(world)
            check_cancelled(self.reporter)
        self.reporter.progress("generate worlds", 2, 2)
        return {"objects": records}

    def _write_benchmark(self, world) -> None:
        """An AIR-SLT-style folder: imgs/eval.tif and annotations/anno.json (query, region outlines)."""
        imgs = self.benchmark / "imgs"
        imgs.mkdir(parents=True, exist_ok=True)
        target = imgs / "eval.tif"
        target.unlink(missing_ok=True)
        try:
            os.link(self.scene, target)
        except OSError:
            shutil.copyfile(self.scene, target)
        samples = []
        for cls in CLASSES:
            points = [np.round(np.asarray(r.exterior.coords)[:-1], 2).tolist() for r in world.regions(cls)]
            if points:
                samples.append({"caption": QUERIES[cls], "jpg_name": "eval.tif", "points": points})
        write_text_atomic(self.benchmark / "annotations" / "anno.json", json.dumps(samples))

    def dataset(self) -> dict[str, Any]:
        from rs_vlm_app.demo.dataset import TileSpec, build_caption_dataset
        from rs_vlm_app.demo.world import generate_world

        world = generate_world(self.settings.train_spec())  # deterministic: the world written by stage 1
        image_size = _model_image_size()
        built = build_caption_dataset(world, self.out / "dataset", TileSpec(
            count=self.settings.tiles, image_size=image_size, seed=self.settings.seed), self.reporter)
        return {"tiles": built.tiles, "captions": built.rows, "tiles_with": built.class_tiles,
                "csv": _rel(built.csv, self.out)}

    def train(self) -> dict[str, Any]:
        from rs_vlm_app.training import TrainConfig, model_setup, train
        from rs_vlm_app.training import checkpoint as training_checkpoint

        config_copy = self.out / "model" / MODEL_CONFIG
        if not config_copy.is_file():
            write_text_atomic(config_copy, resource("demo", MODEL_CONFIG).read_text(encoding="utf-8"))
        s = self.settings
        config = TrainConfig(
            task="clip", data=str(self.out / "dataset" / "captions.csv"), output_dir=str(self.run_dir),
            model_config=str(config_copy), init="none", seed=s.seed, epochs=s.epochs, batch_size=s.batch_size,
            lr=s.lr, wd=0.1, warmup=30, augment=False, precision="fp32", device=self.device, workers=0,
            log_every=25, save_every=100, keep_checkpoints=1, tensorboard=False,
        )
        untrained = self.checkpoint("untrained")
        if not untrained.is_file():
            bundle = model_setup.build(config)  # the same seeded initial weights the run starts from
            training_checkpoint.save_model(untrained, bundle.model.state_dict(),
                                           metadata={"format": "pt", "model": config.model_name, "init": "none"})
        result = train(config, reporter=self.reporter)
        losses = read_losses(self.run_dir / "train_log.csv")
        return {"steps": result.steps, "first_loss": losses[0][1] if losses else None,
                "final_loss": losses[-1][1] if losses else None, "model": _rel(self.checkpoint("trained"), self.out),
                "untrained": _rel(untrained, self.out), "model_config": _rel(self.model_config, self.out)}

    def localize(self) -> dict[str, Any]:
        from rs_vlm_app.geo.grid import GridSpec
        from rs_vlm_app.tasks.localize import LocalizeOptions, localize

        record = {}
        for model in MODELS:
            result = localize(self.scene, self.queries(), self.out / "localize" / model, self.encoder(model),
                              LocalizeOptions(grid=GridSpec.parse(self.settings.grid)),
                              reporter=self.reporter, cache=self.cache())
            record[model] = {q.query: {"heatmap": _rel(q.heatmap, self.out), "vectors": _rel(q.vectors, self.out),
                                       "hotspots": q.hotspots, "best_cosine": q.best_cosine}
                             for q in result.queries}
        return record

    def classify(self) -> dict[str, Any]:
        from rs_vlm_app.tasks.classify import ClassifyOptions, classify_scene

        options = ClassifyOptions(classes=str(resource("demo", "classes.txt")),
                                  templates=str(resource("demo", "templates.txt")), grid=self.settings.grid)
        record = {}
        for model in MODELS:
            folder = self.out / "classify" / model
            result = classify_scene(self.scene, folder, self.encoder(model), options, reporter=self.reporter,
                                    cache=self.cache())
            if tuple(result.classes) != CLASSIFY_LABELS:
                raise RuntimeError(f"resources/demo/classes.txt lists {result.classes}, expected {CLASSIFY_LABELS}")
            record[model] = class_map_accuracy(folder / "classes.tif", self.out / "world" / "eval_masks.tif")
        return record

    def selo(self) -> dict[str, Any]:
        from rs_vlm_app.evaluation.selo_eval import evaluate_selo
        from rs_vlm_app.geo.grid import GridSpec

        record = {}
        for model in MODELS:
            report = evaluate_selo(self.benchmark, self.encoder(model), self.out / "selo" / model,
                                   grid=GridSpec.parse(self.settings.grid), save_probmaps=False,
                                   reporter=self.reporter, cache=self.cache())
            record[model] = {"mean": report["mean"],
                             "per_query": {r["caption"]: {k: r[k] for k in ("Rsu", "Ras", "Rda", "Rmi")}
                                           for r in report["per_sample"]}}
        return record

    # --- models -----------------------------------------------------------------------------------
    def encoder(self, model: str):
        if model not in self._encoders:
            from rs_vlm_app.models.encoder import ClipEncoder
            from rs_vlm_app.models.factory import load_model
            from rs_vlm_app.models.spec import ModelSpec

            loaded = load_model(ModelSpec(checkpoint=self.checkpoint(model), model_config=self.model_config,
                                          quick_gelu=False),
                                device=self.device, expect_family="clip")
            loaded.display_name = f"demo CLIP, {model}"
            self._encoders[model] = ClipEncoder(loaded)
        return self._encoders[model]

    def cache(self):
        if self._cache is None:
            from rs_vlm_app.tasks.embedding_cache import EmbeddingCache

            self._cache = EmbeddingCache(self.out / "cache")
        return self._cache


def run_demo(out_dir: Path, settings: DemoSettings | None = None, *, fresh: bool = False, device: str = "auto",
             reporter: Reporter | None = None) -> DemoResult:
    """Run (or finish) the demo in ``out_dir``; see the module docstring. Returns the metrics."""
    from rs_vlm_app.tasks.outputs import check_output_dir

    settings = settings or DemoSettings.full()
    reporter = reporter or NullReporter()
    out_dir = Path(out_dir)
    state = DemoState.open(out_dir, settings.to_dict(), fresh=fresh)
    check_output_dir(out_dir)
    demo = Demo(out_dir, settings, reporter, device)
    seconds: dict[str, float] = {}
    skipped: list[str] = []
    for number, stage in enumerate(STAGES, start=1):
        record = state.done(stage)
        if record is not None and _outputs_present(demo, stage):
            skipped.append(stage)
            seconds[stage] = float(record.get("seconds", 0.0))
            reporter.log(f"[{number}/{len(STAGES)}] {stage}: done earlier, reused")
            continue
        state.forget_from(STAGES, stage)
        reporter.log(f"[{number}/{len(STAGES)}] {stage}: {_STAGE_WORDS[stage]}")
        started = time.perf_counter()
        if stage == "report":
            from rs_vlm_app.demo.report import write_report

            seconds[stage] = 0.0
            write_report(out_dir, settings, state.stages, seconds | {"report": 0.0})
            record = {}
        else:
            record = getattr(demo, stage)()
        seconds[stage] = time.perf_counter() - started
        record["seconds"] = seconds[stage]
        state.finish(stage, record)
        check_cancelled(reporter)
    metrics = json.loads((out_dir / "demo.json").read_text(encoding="utf-8"))
    return DemoResult(out_dir, out_dir / "report.html", out_dir / "demo.json", metrics, seconds, skipped)


_STAGE_WORDS = {
    "world": "generating the evaluation and training worlds",
    "dataset": "cutting training tiles and captioning them with the rule stage",
    "train": "training the demo CLIP from random weights",
    "localize": "localizing the queries with the trained and the untrained model",
    "classify": "classifying the evaluation scene",
    "selo": "evaluating SeLo (Rsu, Ras, Rda, Rmi) on the known objects",
    "report": "writing the report",
}


def _outputs_present(demo: Demo, stage: str) -> bool:
    out = demo.out
    needed = {
        "world": [demo.scene, out / "world" / "eval_masks.tif", out / "world" / "train.tif",
                  demo.benchmark / "annotations" / "anno.json"],
        "dataset": [out / "dataset" / "captions.csv"],
        "train": [demo.checkpoint("trained"), demo.checkpoint("untrained"), demo.model_config],
        "localize": [out / "localize" / m / "localize.json" for m in MODELS],
        "classify": [out / "classify" / m / "classes.tif" for m in MODELS],
        "selo": [out / "selo" / m / "selo_metrics.json" for m in MODELS],
        "report": [out / "report.html", out / "demo.json"],
    }[stage]
    return all(p.exists() for p in needed)


def _model_image_size() -> int:
    config = json.loads(resource("demo", MODEL_CONFIG).read_text(encoding="utf-8"))
    return int(config["vision_cfg"]["image_size"])


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def read_losses(train_log: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a run's train_log.csv."""
    import csv

    if not train_log.is_file():
        return []
    with open(train_log, newline="", encoding="utf-8") as f:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(f) if row.get("loss")]


def class_map_accuracy(classes_tif: Path, masks_tif: Path) -> dict[str, Any]:
    """Agreement of a class map with the true masks, pixel by pixel on the class map's grid.

    The truth of a pixel is the class whose mask holds its centre, "open land" where none does.
    Returns overall accuracy, balanced accuracy (mean per-class recall) and the recalls.
    """
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(classes_tif) as ds:
        predicted = ds.read(1)
        nodata = ds.nodata
    with rasterio.open(masks_tif) as ds:
        masks = ds.read(out_shape=(ds.count, *predicted.shape), resampling=Resampling.nearest)
    truth = np.full(predicted.shape, len(CLASSES), dtype=np.uint8)
    for index in range(len(CLASSES)):
        truth[masks[index] > 0] = index
    valid = predicted != nodata if nodata is not None else np.ones(predicted.shape, bool)
    recalls = {}
    for index, label in enumerate(CLASSIFY_LABELS):
        where = valid & (truth == index)
        if where.any():
            recalls[label] = float((predicted[where] == index).mean())
    return {"accuracy": float((predicted[valid] == truth[valid]).mean()),
            "balanced_accuracy": float(np.mean(list(recalls.values()))), "recall": recalls}
