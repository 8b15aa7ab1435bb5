"""Job kind "caption": a caption for every tile of one scene (CoCa), as a GeoPackage layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.jobs.kinds.common import check_scene, check_second_model, model_name
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class CaptionSpec(JobSpec):
    """``rsvlm caption``: OUT (.gpkg), layer "captions": tile polygons with caption, clip_score, ..."""

    kind: ClassVar[str] = "caption"

    scene: Path
    out: Path                                # the GeoPackage to write
    model: ModelSpec = field(default_factory=ModelSpec)   # a CoCa captioner
    clip_model: ModelSpec | None = None      # optional: score each caption against its tile
    grid: str = "256"
    bands: list[int] | None = None
    min_valid: float = 0.5
    decoding: Literal["greedy", "beam"] = "beam"
    beams: int = 3
    max_len: int = 30
    min_len: int = 1
    length_penalty: float = 1.0

    def title(self) -> str:
        return f"captions of {Path(self.scene).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.scene)]

    def options(self):
        """The task's CaptionOptions (validates grid, bands, min_valid and decoding)."""
        from rs_vlm_app.tasks.captioning import CaptionOptions

        return CaptionOptions(grid=self.grid, decoding=self.decoding, beams=self.beams, max_len=self.max_len,
                              min_len=self.min_len, length_penalty=self.length_penalty,
                              bands=tuple(self.bands) if self.bands else None, min_valid=self.min_valid)

    def check(self) -> None:
        from rs_vlm_app.tasks.captioning import check_output_file

        self.options()
        self.model.check(family="coca")
        check_second_model(self.clip_model, "clip_model", "clip")
        check_scene(self.scene, self.bands)
        check_output_file(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.tasks.captioning import LAYER, caption_scene

        captioner = ctx.models.load(self.model, "coca", wrap=self._captioner, purpose="captioner")
        clip = ctx.clip_encoder(self.clip_model) if self.clip_model is not None else None
        result = caption_scene(Path(self.scene), Path(self.out), captioner, self.options(), clip=clip,
                               reporter=ctx.reporter, cache=ctx.cache)
        summary = {
            "scene": str(self.scene), "out": str(result.out), "model": model_name(captioner, self.model),
            "tiles": result.tiles, "decoded_now": result.decoded_now, "skipped": result.skipped,
            "clip_scored": result.clip_scored, "crs": result.crs, "seconds": result.seconds,
            "common_captions": common_captions(result.out, LAYER),
        }
        return JobResult([ResultFile(str(result.out), "tiles", "captions", [LAYER])], summary)

    def _captioner(self, loaded):
        from rs_vlm_app.models.captioner import CocaCaptioner

        return CocaCaptioner(loaded, device=self.model.device, precision=self.model.precision,
                             batch_size=self.model.batch_size)


def common_captions(path: Path, layer: str, n: int = 5) -> list[list]:
    """The ``n`` most common captions of the layer, as [caption, count], most common first."""
    from collections import Counter

    from pyogrio.raw import read

    _meta, _fids, _geometry, fields = read(path, layer=layer, columns=["caption"], read_geometry=False)
    return [[text, count] for text, count in Counter(fields[0]).most_common(n)]
