"""The Processing algorithms: processing.run against the real worker, batch mode, the model
builder, loading styled outputs, and bad input as QgsProcessingException messages."""

from __future__ import annotations

import processing
import pytest
from processing.core.Processing import Processing
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterRasterLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)

from tests.qgis.conftest import LANDSAT, NAIP, area_layer, heat_map_valid_columns

ALGORITHMS = ("rsvlm:localize", "rsvlm:caption", "rsvlm:classify", "rsvlm:search", "rsvlm:dataset_build",
              "rsvlm:fine_tune")


@pytest.fixture(scope="module")
def registry(plugin):
    Processing.initialize()
    return QgsApplication.processingRegistry()


def model_params(tiny_models, device=2):
    return {"MODEL": tiny_models["clip"]["checkpoint"], "MODEL_CONFIG": tiny_models["clip"]["config"],
            "DEVICE": device}


class Feedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.errors: list[str] = []
        self.infos: list[str] = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self.errors.append(error)

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(info)


def test_the_provider_lists_its_algorithms_with_help(registry):
    provider = registry.providerById("rsvlm")
    assert provider is not None and provider.name() == "rs-vlm"
    for algorithm_id in ALGORITHMS:
        alg = registry.algorithmById(algorithm_id)
        assert alg is not None, algorithm_id
        assert len(alg.shortHelpString()) > 200
        assert alg.flags() & alg.Flag.FlagCanCancel
        for parameter in alg.parameterDefinitions():
            assert parameter.description()


def test_localize_writes_a_styled_heat_map_and_hot_spots_in_the_scenes_crs(registry, configured, tmp_path):
    feedback = Feedback()
    result = processing.run("rsvlm:localize", {
        "INPUT": str(LANDSAT), "QUERY": "bright clouds", "HOTSPOT_THRESHOLD": 0.7, "GRID": "128,256@0.5",
        **model_params(configured),
        "OUTPUT_HEATMAP": str(tmp_path / "clouds.tif"), "OUTPUT_HOTSPOTS": str(tmp_path / "clouds.gpkg"),
        "OUTPUT_TILES": str(tmp_path / "tiles.gpkg"),
    }, feedback=feedback)
    assert result["OUTPUT_HEATMAP"] == str(tmp_path / "clouds.tif")
    scene = QgsRasterLayer(str(LANDSAT), "scene", "gdal")
    heat = QgsRasterLayer(result["OUTPUT_HEATMAP"], "heat", "gdal")
    assert heat.isValid() and heat.crs().authid() == "EPSG:4326"
    assert heat.extent().buffered(scene.extent().width() / 50).contains(scene.extent())
    assert (tmp_path / "clouds.qml").is_file()  # QGIS loads it as the default style
    stats = heat.dataProvider().bandStatistics(1)
    assert stats.minimumValue == pytest.approx(0.0, abs=1e-6) and stats.maximumValue == pytest.approx(1.0, abs=1e-6)
    spots = QgsVectorLayer(result["OUTPUT_HOTSPOTS"], "spots", "ogr")
    assert spots.isValid() and spots.crs().authid() == "EPSG:4326"
    assert spots.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry
    assert spots.featureCount() == result["HOTSPOT_COUNT"] >= 1
    assert {"rank", "score", "mean_score", "area", "peak_x", "peak_y"} <= set(spots.fields().names())
    assert all(f["score"] >= 0.7 - 1e-6 for f in spots.getFeatures())
    tiles = QgsVectorLayer(result["OUTPUT_TILES"], "tiles", "ogr")
    assert tiles.featureCount() > 20 and "score" in tiles.fields().names()
    assert -1.0 <= result["BEST_SCORE"] <= 1.0
    assert any("hot spot(s)" in line for line in feedback.infos)
    assert not feedback.errors


def test_loaded_outputs_get_the_shipped_styles_and_names(registry, configured, tmp_path):
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    result = processing.runAndLoadResults("rsvlm:localize", {
        "INPUT": str(NAIP), "QUERY": "a pond", "GRID": "256", **model_params(configured),
        "OUTPUT_HEATMAP": "TEMPORARY_OUTPUT", "OUTPUT_HOTSPOTS": "TEMPORARY_OUTPUT"},
        context=context, feedback=feedback)
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert "a pond · heat map" in layers and "a pond · hot spots" in layers, list(layers)
    heat, spots = layers["a pond · heat map"], layers["a pond · hot spots"]
    assert heat.source() == result["OUTPUT_HEATMAP"]
    assert heat.renderer().type() == "singlebandpseudocolor"
    assert heat.crs().authid() == "EPSG:26914" and spots.crs().authid() == "EPSG:26914"
    assert spots.labelsEnabled() and spots.featureCount() >= 1


def test_batch_mode_runs_rows_on_one_worker(registry, plugin, configured, tmp_path):
    """What the batch dialog does for each row: preprocess, a fresh context, run, handle results."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    alg = registry.createAlgorithmById("rsvlm:localize")
    rows = [{"INPUT": str(NAIP), "QUERY": query, "GRID": "256", **model_params(configured),
             "OUTPUT_HEATMAP": str(tmp_path / f"{n}.tif"), "OUTPUT_HOTSPOTS": str(tmp_path / f"{n}.gpkg")}
            for n, query in enumerate(["a lake", "a forest", "a road"])]
    pids = set()
    for parameters in rows:
        context = QgsProcessingContext()
        feedback = QgsProcessingFeedback()
        results, ok = alg.run(alg.preprocessParameters(parameters), context, feedback)
        assert ok, results
        handleAlgorithmResults(alg, context, feedback, False, parameters)
        pids.add(plugin.service.hello.pid)
    assert len(pids) == 1
    for n in range(3):
        assert QgsRasterLayer(str(tmp_path / f"{n}.tif"), "h", "gdal").isValid()
        assert QgsVectorLayer(str(tmp_path / f"{n}.gpkg"), "s", "ogr").featureCount() >= 1


def test_a_model_chains_localize_into_native_algorithms(registry, configured, tmp_path):
    """The model builder: rs-vlm's hot spots feed QGIS's centroids algorithm."""
    model = QgsProcessingModelAlgorithm("hot spot centres", "rs-vlm tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    localize = QgsProcessingModelChildAlgorithm("rsvlm:localize")
    localize.setChildId("localize")
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    localize.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    # the model designer fills every parameter with its default; do the same
    values = {"QUERY": "a river", "GRID": "256", "HOTSPOT_THRESHOLD": 0.6, "MIN_VALID": 0.5, **model_params(configured)}
    for name, value in values.items():
        localize.addParameterSources(name, [static(value)])
    model.addChildAlgorithm(localize)
    centroids = QgsProcessingModelChildAlgorithm("native:centroids")
    centroids.setChildId("centroids")
    centroids.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput(
        "localize", "OUTPUT_HOTSPOTS")])
    centroids.addParameterSources("ALL_PARTS", [static(False)])
    output = QgsProcessingModelOutput("centres", "Hot-spot centres")
    output.setChildId("centroids")
    output.setChildOutputName("OUTPUT")
    centroids.setModelOutputs({"centres": output})
    model.addChildAlgorithm(centroids)
    ok, errors = model.validate()
    assert ok, errors
    result = processing.run(model, {"scene": str(NAIP), "centroids:centres": str(tmp_path / "centres.gpkg")})
    centres = QgsVectorLayer(result["centroids:centres"], "c", "ogr")
    assert centres.isValid() and centres.featureCount() >= 1
    assert centres.geometryType() == QgsWkbTypes.GeometryType.PointGeometry
    assert centres.crs().authid() == "EPSG:26914"


def test_bad_input_fails_with_a_readable_message(registry, configured, tmp_path):
    wms = QgsRasterLayer("crs=EPSG:3857&format=image/png&layers=a&styles=&url=http://127.0.0.1:9/wms", "basemap", "wms")
    QgsProject.instance().addMapLayer(wms)
    base = {**model_params(configured), "OUTPUT_HEATMAP": str(tmp_path / "h.tif"),
            "OUTPUT_HOTSPOTS": str(tmp_path / "h.gpkg")}
    with pytest.raises(QgsProcessingException) as info:
        processing.run("rsvlm:localize", {**base, "INPUT": wms.id(), "QUERY": "a lake"})
    assert "basemap" in str(info.value) or "Could not load source layer" in str(info.value)
    with pytest.raises(QgsProcessingException, match="the query is empty"):
        processing.run("rsvlm:localize", {**base, "INPUT": str(NAIP), "QUERY": "   "})
    with pytest.raises(QgsProcessingException, match="missing.json.*not found|not found.*missing.json"):
        processing.run("rsvlm:localize", {**base, "INPUT": str(NAIP), "QUERY": "a lake",
                                           "MODEL_CONFIG": str(tmp_path / "missing.json")})
    with pytest.raises(QgsProcessingException, match="bands '1,2'"):
        processing.run("rsvlm:localize", {**base, "INPUT": str(NAIP), "QUERY": "a lake", "BANDS": "1,2"})
    with pytest.raises(QgsProcessingException, match="band"):  # the worker's check: NAIP has 4 bands
        processing.run("rsvlm:localize", {**base, "INPUT": str(NAIP), "QUERY": "a lake", "BANDS": "4,3,9"})
    assert not (tmp_path / "h.tif").exists()


def test_bands_and_heat_map_pixel_reach_the_worker(registry, configured, tmp_path):
    result = processing.run("rsvlm:localize", {
        "INPUT": str(NAIP), "QUERY": "a field", "GRID": "256", "BANDS": "4,3,2", "HEATMAP_PIXEL": 8,
        **model_params(configured), "OUTPUT_HEATMAP": str(tmp_path / "h.tif"),
        "OUTPUT_HOTSPOTS": str(tmp_path / "h.gpkg")})
    heat = QgsRasterLayer(result["OUTPUT_HEATMAP"], "heat", "gdal")
    assert heat.rasterUnitsPerPixelX() == pytest.approx(8 * 5.0, rel=0.01)  # NAIP: 5 m pixels
    assert heat.width() == round(934 / 8)


def test_cancelling_feedback_cancels_the_job(registry, configured, tmp_path):
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 0 else None)
    with pytest.raises(QgsProcessingException, match="cancel"):
        processing.run("rsvlm:localize", {
            "INPUT": str(NAIP), "QUERY": "a lake", "GRID": "32@0.5", **model_params(configured),
            "OUTPUT_HEATMAP": str(tmp_path / "h.tif"), "OUTPUT_HOTSPOTS": str(tmp_path / "h.gpkg")},
            feedback=feedback)
    assert not (tmp_path / "h.tif").exists()


def test_an_area_in_another_crs_masks_the_heat_map(registry, configured, tmp_path):
    from qgis.core import QgsProcessingFeatureSourceDefinition

    scene = QgsRasterLayer(str(NAIP), "scene", "gdal")
    area = area_layer(scene)
    try:
        feedback = Feedback()
        result = processing.run("rsvlm:localize", {
            "INPUT": str(NAIP), "QUERY": "a field", "GRID": "128", "HEATMAP_PIXEL": 4,
            "AREA": QgsProcessingFeatureSourceDefinition(area.id(), selectedFeaturesOnly=True),
            **model_params(configured), "OUTPUT_HEATMAP": str(tmp_path / "h.tif"),
            "OUTPUT_TILES": str(tmp_path / "t.gpkg"), "OUTPUT_HOTSPOTS": str(tmp_path / "h.gpkg")},
            feedback=feedback)
        first, last, width = heat_map_valid_columns(result["OUTPUT_HEATMAP"])
        assert first == 0 and width / 3 - 3 <= last + 1 <= width / 3 + 3  # the west third only; not the east tip
        tiles = QgsVectorLayer(result["OUTPUT_TILES"], "tiles", "ogr")
        scene_x = scene.extent().xMinimum() + scene.extent().width() / 3
        assert tiles.featureCount() > 0 and all(f.geometry().boundingBox().xMinimum() < scene_x
                                                for f in tiles.getFeatures())
    finally:
        QgsProject.instance().removeMapLayer(area.id())
