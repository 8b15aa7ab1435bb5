"""Processing algorithm "Caption tiles": a sentence for every tile of a raster (CoCa)."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .. import specs
from ..compat import enum
from .base import WorkerAlgorithm, advanced, result_file

HELP = """<p>Writes a caption for every tile of a raster with a CoCa captioning model (for example
RS-CoCa) running in the rs-vlm worker.</p>
<p>The output has one polygon per tile, in the raster's CRS, with <b>caption</b>, the tile's pixel
window and size (<b>scale</b>), the decoder's mean log-probability per token and whether the
caption was cut at the maximum length. Finished tiles are checkpointed: a cancelled run continues
where it stopped when run again with the same parameters.</p>
<p>With <b>Score each caption</b>, a CLIP model (the one in rs-vlm's settings) rates how well each
caption matches its tile (<b>clip_score</b>, a cosine similarity).</p>
<p><b>Decoding</b>: greedy is fastest; beam search keeps the N best partial captions and usually
reads better. The model defaults to the captioner in rs-vlm's settings.</p>"""

DECODINGS = ("beam", "greedy")


class CaptionAlgorithm(WorkerAlgorithm):
    model_family = "caption"

    def name(self) -> str:
        return "caption"

    def displayName(self) -> str:  # noqa: N802
        return "Caption tiles"

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP

    def tags(self) -> list[str]:
        return ["coca", "caption", "describe", "image captioning", "tiles", "vision language"]

    def initAlgorithm(self, config=None):  # noqa: N802
        integer = enum("Qgis.ProcessingNumberParameterType.Integer", "QgsProcessingParameterNumber.Type.Integer")
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a file-backed layer)"))
        self.addParameter(QgsProcessingParameterEnum("DECODING", "Decoding", options=list(DECODINGS), defaultValue=0))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "BEAMS", "Beams (beam search)", type=integer, defaultValue=3, minValue=1, maxValue=16)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "MAX_LEN", "Most tokens per caption", type=integer, defaultValue=30, minValue=2, maxValue=128)))
        self.add_model_parameters()
        self.add_grid_parameter("256")
        self.add_area_parameter()
        self.add_bands_parameter()
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            "CLIP_SCORE", "Score each caption against its tile with the CLIP model of rs-vlm's settings (clip_score)",
            defaultValue=False)))
        polygon = enum("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", "Captions", type=polygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        scene = self.scene_path(layer)
        spec = specs.caption(
            scene, self.work_dir() / "captions.gpkg", self.model_spec(parameters, context),
            grid=self.grid(parameters, context),
            decoding=DECODINGS[self.parameterAsEnum(parameters, "DECODING", context)],
            beams=self.parameterAsInt(parameters, "BEAMS", context),
            max_len=self.parameterAsInt(parameters, "MAX_LEN", context),
            bands=self.bands(parameters, context),
            aoi=self.area(parameters, context, feedback), clip_model=self.clip_scorer(parameters, context),
        )
        outcome = self.run_job(spec, feedback)
        gpkg = result_file(outcome, "tiles", (".gpkg",), fallback_roles=("vectors",))
        dest = self.copy_features(gpkg, self.layer_name(outcome, gpkg, "captions"), parameters, "OUTPUT",
                                  context, feedback)
        self.style_when_loaded(context, dest, "captions", f"captions · {layer.name()}")
        return {"OUTPUT": dest}

    def clip_scorer(self, parameters, context) -> dict | None:
        """The settings' CLIP model on this run's device, when captions are to be scored."""
        if not self.parameterAsBool(parameters, "CLIP_SCORE", context):
            return None
        from .. import settings

        config = settings.load_config()
        return config.clip.to_spec(self.model_spec(parameters, context).get("device", config.device))
