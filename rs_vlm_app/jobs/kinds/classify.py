"""Job kind "classify": zero-shot classes of every tile and pixel of one scene."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.kinds.common import check_aoi, short, task_options
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register
from rs_vlm_app.tasks.options import ClassifyOptions, default_of

#: Where a class list given inline (a list of names) is kept in the output folder.
INLINE_CLASSES_FILE = "classes.txt"


@register
@dataclass
class ClassifySpec(JobSpec):
    """``rsvlm classify``: OUT/classes.tif, probabilities.tif, tiles.gpkg, classify.json."""

    kind: ClassVar[str] = "classify"

    scene: Path
    classes: str | list[str]                 # aid | resisc45 | eurosat | a class file, or the class names
    out: Path                                # output folder
    model: ModelSpec = field(default_factory=ModelSpec)
    # the task's options: defaults, ranges and meaning declared once in rs_vlm_app.tasks.options
    templates: str | None = default_of(ClassifyOptions, "templates")
    grid: str = default_of(ClassifyOptions, "grid")
    bands: list[int] | None = default_of(ClassifyOptions, "bands")
    min_valid: float = default_of(ClassifyOptions, "min_valid")
    top_k: int = default_of(ClassifyOptions, "top_k")
    pixel: float | None = default_of(ClassifyOptions, "pixel")
    probabilities: bool = default_of(ClassifyOptions, "probabilities")
    cog: bool = default_of(ClassifyOptions, "cog")
    aoi: str | None = default_of(ClassifyOptions, "aoi")

    def title(self) -> str:
        what = ", ".join(self.classes) if isinstance(self.classes, list) else str(self.classes)
        return f"classes ({short(what, 40)}) of {Path(self.scene).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.scene)]

    def inline_classes(self):
        """The ClassList of an inline list of names (None when ``classes`` names a list or a file)."""
        if not isinstance(self.classes, list):
            return None
        from rs_vlm_app.tasks.classes import parse_classes

        return parse_classes("\n".join(self.classes), source="classify.classes")

    def options(self, classes_file: str | None = None) -> ClassifyOptions:
        """The task's options (built, and so validated, once); ``classes_file`` stands in for an inline list."""
        classes = classes_file or (self.classes if isinstance(self.classes, str) else "inline")
        return task_options(self, ClassifyOptions, classes=classes)

    def check(self) -> None:
        from rs_vlm_app.tasks.classes import load_templates
        from rs_vlm_app.tasks.inputs import check_input_file
        from rs_vlm_app.tasks.options import MAX_CLASSES
        from rs_vlm_app.tasks.outputs import check_output_dir

        options = self.options()
        inline = self.inline_classes()
        if inline is None:
            self.__dict__["_loaded_classes"] = options.load()  # read once: run() reuses it
        else:
            if len(inline) > MAX_CLASSES - 1:
                raise UserError(f"classify.classes: {len(inline)} classes; a class raster holds at most "
                                f"{MAX_CLASSES - 1}")
            load_templates(self.templates)
        self.model.check(family="clip")
        check_input_file(Path(self.scene))  # opened once, by run, before the model loads
        check_aoi(self.aoi, [Path(self.scene)], self.bands)
        check_output_dir(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.atomic import write_text_atomic
        from rs_vlm_app.tasks.classify import classify_scene

        out = Path(self.out)
        classes_file = None
        if isinstance(self.classes, list):
            classes_file = out / INLINE_CLASSES_FILE
            write_text_atomic(classes_file, "".join(f"{line.strip()}\n" for line in self.classes))
        from rs_vlm_app.tasks.inputs import scene_source

        options = self.options(str(classes_file) if classes_file else None)
        with scene_source(self.scene, options.bands) as source:  # a bad raster fails before the model loads
            encoder = ctx.clip_encoder(self.model)
            result = classify_scene(source, out, encoder, options, reporter=ctx.reporter, cache=ctx.cache,
                                    checked=True, loaded=self.__dict__.get("_loaded_classes"))
        roles = {"classes.tif": ("classes", "classes", None), "classes.qml": ("style", "classes", None),
                 "probabilities.tif": ("raster", "probabilities", None), "tiles.gpkg": ("tiles", "classes", ["tiles"]),
                 "classify.json": ("report", "classify", None)}
        files = [ResultFile(str(path), *roles[path.name]) for path in result.files if path.name in roles]
        if classes_file is not None:
            files.append(ResultFile(str(classes_file), "file", "class list"))
        summary = {
            "scene": str(self.scene), "out": str(out), "model": encoder.display_name,
            "classes": result.classes, "class_source": str(classes_file or self.classes),
            "tiles": result.tiles, "area_share": result.area_share, "seconds": result.seconds,
        }
        return JobResult(files, summary)
