"""Processing algorithm "Semantic localization": where does a text query appear in a raster?"""

from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .. import specs
from ..compat import enum
from .base import WorkerAlgorithm, advanced, result_file

HELP = """<p>Finds where a plain-language query (for example <i>airplanes parked near a terminal</i>)
appears in a raster, with a CLIP model running in the rs-vlm worker (never inside QGIS).</p>
<p>The raster is cut into tiles at several window sizes; each tile's image embedding is compared with
the query's text embedding, and the per-pixel mean of the covering tiles gives a <b>heat map</b>
(0 = least, 1 = most similar; smoothed and min-max normalised). Regions above the <b>hot-spot
threshold</b> become <b>hot spot</b> polygons, ranked by their peak score. The first query on a
scene encodes its tiles (and caches them); every later query on it takes a moment.</p>
<p>Outputs are in the raster's CRS: the heat map (GeoTIFF, styled with a transparent colour ramp),
the hot spots (rank, score, mean_score, area, peak_x, peak_y) and optionally every tile with its raw
cosine similarity.</p>
<p>Model, architecture and device default to rs-vlm's settings (Settings &gt; Options &gt; rs-vlm).</p>"""


class LocalizeAlgorithm(WorkerAlgorithm):
    model_family = "clip"

    def name(self) -> str:
        return "localize"

    def displayName(self) -> str:  # noqa: N802
        return "Semantic localization"

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP

    def tags(self) -> list[str]:
        return ["clip", "heat map", "text query", "semantic localization", "selo", "vision language"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a file-backed layer)"))
        self.addParameter(QgsProcessingParameterString("QUERY", "Query (what to find, in plain language)"))
        self.addParameter(QgsProcessingParameterNumber(
            "HOTSPOT_THRESHOLD", "Hot-spot threshold (on the 0..1 heat map)",
            type=enum("Qgis.ProcessingNumberParameterType.Double", "QgsProcessingParameterNumber.Type.Double"),
            defaultValue=0.6, minValue=0.0, maxValue=1.0))
        self.add_model_parameters()
        self.add_grid_parameter()
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "MIN_VALID", "Skip tiles with less valid (non-nodata) area than this fraction",
            type=enum("Qgis.ProcessingNumberParameterType.Double", "QgsProcessingParameterNumber.Type.Double"),
            defaultValue=0.5, minValue=0.0, maxValue=1.0)))
        self.add_area_parameter()
        self.add_bands_parameter()
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "HEATMAP_PIXEL", "Heat-map pixel size in source pixels (0 or empty: chosen from the raster's size)",
            type=enum("Qgis.ProcessingNumberParameterType.Double", "QgsProcessingParameterNumber.Type.Double"),
            optional=True, minValue=0.0)))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_HEATMAP", "Heat map"))
        polygon = enum("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT_HOTSPOTS", "Hot spots", type=polygon))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT_TILES", "Tile scores", type=polygon, optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("HOTSPOT_COUNT", "Number of hot spots"))
        self.addOutput(QgsProcessingOutputNumber("BEST_SCORE", "Highest tile cosine similarity"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        scene = self.scene_path(layer)
        query = " ".join(self.parameterAsString(parameters, "QUERY", context).split())
        if not query:
            from qgis.core import QgsProcessingException

            raise QgsProcessingException("the query is empty: describe what to find, e.g. \"a harbour with boats\"")
        spec = specs.localize(
            scene, [query], self.work_dir(), self.model_spec(parameters, context),
            grid=self.grid(parameters, context),
            hotspot_threshold=self.parameterAsDouble(parameters, "HOTSPOT_THRESHOLD", context),
            min_valid=self.parameterAsDouble(parameters, "MIN_VALID", context),
            bands=self.bands(parameters, context),
            aoi=self.area(parameters, context, feedback), heatmap_pixel=self.heatmap_pixel(parameters, context),
        )
        outcome = self.run_job(spec, feedback)
        heatmap = self.copy_raster(result_file(outcome, "heatmap"),
                                   self.parameterAsOutputLayer(parameters, "OUTPUT_HEATMAP", context), "heatmap")
        vectors = result_file(outcome, "vectors", (".gpkg",))
        results = {"OUTPUT_HEATMAP": heatmap}
        self.style_when_loaded(context, heatmap, "heatmap", f"{query} · heat map")
        results["OUTPUT_HOTSPOTS"] = self.copy_features(vectors, "hotspots", parameters, "OUTPUT_HOTSPOTS",
                                                        context, feedback)
        self.style_when_loaded(context, results["OUTPUT_HOTSPOTS"], "hotspots", f"{query} · hot spots")
        tiles = self.copy_features(vectors, "tiles", parameters, "OUTPUT_TILES", context, feedback, optional=True)
        if tiles:
            results["OUTPUT_TILES"] = tiles
            self.style_when_loaded(context, tiles, "tile_scores", f"{query} · tile scores")
        summary = outcome.result.summary or {}
        entry = next((q for q in summary.get("queries", []) if isinstance(q, dict)), {})
        results["HOTSPOT_COUNT"] = entry.get("hotspots")
        results["BEST_SCORE"] = entry.get("best_cosine")
        feedback.pushInfo(f"'{query}': {entry.get('hotspots', '?')} hot spot(s), best tile cosine "
                          f"{entry.get('best_cosine', float('nan')):.3f}")
        return results

    def heatmap_pixel(self, parameters, context) -> float | None:
        value = self.parameterAsDouble(parameters, "HEATMAP_PIXEL", context)  # 0 when not given
        return value if value > 0 else None
