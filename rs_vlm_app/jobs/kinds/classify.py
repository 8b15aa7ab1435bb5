"""Job kind "classify": zero-shot classes of every tile and pixel of one scene."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.kinds.common import check_scene, model_name, short
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register

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
    templates: str | None = None             # a template file (default: the built-in set)
    grid: str = "256"
    bands: list[int] | None = None
    min_valid: float = 0.5
    top_k: int = 3
    pixel: float | None = None
    probabilities: bool = True
    cog: bool = False

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

    def options(self, classes_file: str | None = None):
        """The task's ClassifyOptions (validates grid, bands, min_valid, top_k, pixel)."""
        from rs_vlm_app.tasks.classify import ClassifyOptions

        classes = classes_file or (self.classes if isinstance(self.classes, str) else "inline")
        return ClassifyOptions(classes=classes, templates=self.templates, grid=self.grid, top_k=self.top_k,
                               bands=tuple(self.bands) if self.bands else None, min_valid=self.min_valid,
                               pixel=self.pixel, probabilities=self.probabilities, cog=self.cog)

    def check(self) -> None:
        from rs_vlm_app.tasks.classes import load_templates
        from rs_vlm_app.tasks.classify import MAX_CLASSES
        from rs_vlm_app.tasks.localize import check_output_dir

        options = self.options()
        inline = self.inline_classes()
        if inline is None:
            options.load()
        else:
            if len(inline) > MAX_CLASSES - 1:
                raise UserError(f"classify.classes: {len(inline)} classes; a class raster holds at most "
                                f"{MAX_CLASSES - 1}")
            load_templates(self.templates)
        self.model.check(family="clip")
        check_scene(self.scene, self.bands)
        check_output_dir(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.atomic import write_text_atomic
        from rs_vlm_app.tasks.classify import classify_scene

        out = Path(self.out)
        classes_file = None
        if isinstance(self.classes, list):
            classes_file = out / INLINE_CLASSES_FILE
            write_text_atomic(classes_file, "".join(f"{line.strip()}\n" for line in self.classes))
        encoder = ctx.clip_encoder(self.model)
        result = classify_scene(Path(self.scene), out, encoder,
                                self.options(str(classes_file) if classes_file else None),
                                reporter=ctx.reporter, cache=ctx.cache)
        roles = {"classes.tif": ("raster", "classes", None), "classes.qml": ("style", "classes", None),
                 "probabilities.tif": ("raster", "probabilities", None), "tiles.gpkg": ("tiles", "classes", ["tiles"]),
                 "classify.json": ("report", "classify", None)}
        files = [ResultFile(str(path), *roles[path.name]) for path in result.files if path.name in roles]
        if classes_file is not None:
            files.append(ResultFile(str(classes_file), "file", "class list"))
        summary = {
            "scene": str(self.scene), "out": str(out), "model": model_name(encoder, self.model),
            "classes": result.classes, "class_source": str(classes_file or self.classes),
            "tiles": result.tiles, "area_share": result.area_share, "seconds": result.seconds,
        }
        return JobResult(files, summary)
