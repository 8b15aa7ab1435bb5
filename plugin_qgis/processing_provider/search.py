"""Processing algorithm "Text search": the tiles of many rasters that best match a sentence."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .. import specs
from ..compat import enum
from .base import WorkerAlgorithm, result_file

HELP = """<p>Ranks the tiles of one or many rasters by how well they match a plain-language query
(for example <i>a marina with many boats</i>) with a CLIP model, and returns the best ones.</p>
<p>Each raster is encoded once into rs-vlm's embedding cache (shared with Semantic localization and
Zero-shot classification); later searches on the same rasters only encode the query and take a
moment.</p>
<p>Outputs: the <b>footprints</b> of the k best tiles with rank, score (cosine similarity), the raster
they come from and their pixel window, all in the first raster's CRS; optionally a PNG
<b>contact sheet</b> of those tiles.</p>"""


class SearchAlgorithm(WorkerAlgorithm):
    model_family = "clip"

    def name(self) -> str:
        return "search"

    def displayName(self) -> str:  # noqa: N802
        return "Text search"

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP

    def tags(self) -> list[str]:
        return ["clip", "search", "retrieval", "text query", "tiles", "rank"]

    def initAlgorithm(self, config=None):  # noqa: N802
        raster = enum("Qgis.ProcessingSourceType.Raster", "QgsProcessing.SourceType.TypeRaster")
        integer = enum("Qgis.ProcessingNumberParameterType.Integer", "QgsProcessingParameterNumber.Type.Integer")
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUTS", "Rasters to search", layerType=raster))
        self.addParameter(QgsProcessingParameterString("QUERY", "Query (what to find, in plain language)"))
        self.addParameter(QgsProcessingParameterNumber(
            "TOP_K", "Tiles to return", type=integer, defaultValue=20, minValue=1, maxValue=10000))
        self.add_model_parameters()
        self.add_grid_parameter("256")
        self.add_bands_parameter()
        polygon = enum("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", "Best tiles", type=polygon))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_SHEET", "Contact sheet", fileFilter="PNG images (*.png)", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layers = self.parameterAsLayerList(parameters, "INPUTS", context)
        if not layers:
            raise QgsProcessingException("choose at least one raster to search")
        scenes = [self.scene_path(layer) for layer in layers]
        query = " ".join(self.parameterAsString(parameters, "QUERY", context).split())
        if not query:
            raise QgsProcessingException("the query is empty: describe what to find, e.g. \"a marina with boats\"")
        sheet_target = self.parameterAsFileOutput(parameters, "OUTPUT_SHEET", context)
        spec = specs.search(scenes, query, self.work_dir() / "search.gpkg", self.model_spec(parameters, context),
                            top_k=self.parameterAsInt(parameters, "TOP_K", context),
                            grid=self.grid(parameters, context), contact_sheet=bool(sheet_target),
                            bands=self.bands(parameters, context))
        outcome = self.run_job(spec, feedback)
        gpkg = result_file(outcome, "tiles", (".gpkg",), fallback_roles=("vectors",))
        dest = self.copy_features(gpkg, self.layer_name(outcome, gpkg, "results"), parameters, "OUTPUT",
                                  context, feedback)
        self.style_when_loaded(context, dest, "search_results", f"'{query}' · best tiles")
        results = {"OUTPUT": dest}
        if sheet_target:
            sheet = result_file(outcome, "file", (".png",))
            results["OUTPUT_SHEET"] = self.copy_file(sheet, sheet_target)
        return results


