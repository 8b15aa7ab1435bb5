"""Job kind "caption": a caption for every tile of one scene (CoCa), as a GeoPackage layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.jobs.kinds.common import check_aoi, check_second_model, task_options
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register
from rs_vlm_app.tasks.options import CaptionOptions, default_of


@register
@dataclass
class CaptionSpec(JobSpec):
    """``rsvlm caption``: OUT (.gpkg), layer "captions": tile polygons with caption, clip_score, ..."""

    kind: ClassVar[str] = "caption"

    scene: Path
    out: Path                                # the GeoPackage to write
    model: ModelSpec = field(default_factory=ModelSpec)   # a CoCa captioner
    clip_model: ModelSpec | None = None      # optional: score each caption against its tile
    # the task's options: defaults, ranges and meaning declared once in rs_vlm_app.tasks.options
    grid: str = default_of(CaptionOptions, "grid")
    bands: list[int] | None = default_of(CaptionOptions, "bands")
    min_valid: float = default_of(CaptionOptions, "min_valid")
    decoding: Literal["greedy", "beam"] = default_of(CaptionOptions, "decoding")
    beams: int = default_of(CaptionOptions, "beams")
    max_len: int = default_of(CaptionOptions, "max_len")
    min_len: int = default_of(CaptionOptions, "min_len")
    length_penalty: float = default_of(CaptionOptions, "length_penalty")
    aoi: str | None = default_of(CaptionOptions, "aoi")

    def title(self) -> str:
        return f"captions of {Path(self.scene).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.scene)]

    def options(self) -> CaptionOptions:
        """The task's options, built (and so validated) once."""
        return task_options(self, CaptionOptions)

    def check(self) -> None:
        from rs_vlm_app.tasks.inputs import check_input_file
        from rs_vlm_app.tasks.outputs import check_vector_output

        self.options()
        self.model.check(family="coca")
        check_second_model(self.clip_model, "clip_model", "clip")
        check_input_file(Path(self.scene))  # opened once, by run, before the models load
        check_aoi(self.aoi, [Path(self.scene)], self.bands)
        check_vector_output(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.tasks.captioning import LAYER, caption_scene
        from rs_vlm_app.tasks.inputs import scene_source

        options = self.options()
        with scene_source(self.scene, options.bands) as source:  # a bad raster fails before the models load
            captioner = ctx.captioner(self.model)
            clip = ctx.clip_encoder(self.clip_model) if self.clip_model is not None else None
            result = caption_scene(source, Path(self.out), captioner, options, clip=clip, reporter=ctx.reporter,
                                   cache=ctx.cache, checked=True)
        summary = {
            "scene": str(self.scene), "out": str(result.out), "model": captioner.display_name,
            "tiles": result.tiles, "decoded_now": result.decoded_now, "skipped": result.skipped,
            "clip_scored": result.clip_scored, "crs": result.crs, "seconds": result.seconds,
            "common_captions": common_captions(result.out, LAYER),
        }
        return JobResult([ResultFile(str(result.out), "tiles", "captions", [LAYER])], summary)


def common_captions(path: Path, layer: str, n: int = 5) -> list[list]:
    """The ``n`` most common captions of the layer, as [caption, count], most common first."""
    from collections import Counter

    from rs_vlm_app.geo.vectors import read_vector

    captions = read_vector(path, layer if Path(path).suffix.lower() == ".gpkg" else None)["caption"]
    return [[text, count] for text, count in Counter(captions).most_common(n)]
