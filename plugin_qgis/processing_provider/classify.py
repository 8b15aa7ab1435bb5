"""Processing algorithm "Zero-shot classification": scene classes per tile and per pixel (CLIP)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .. import specs
from ..compat import enum
from ..shipped import class_lists
from .base import WorkerAlgorithm, result_file

HELP = """<p>Labels every tile of a raster with scene classes, zero-shot: a CLIP model compares each
tile with prompts built from the class names ("a satellite image of a harbour", ...), with no
training on these classes.</p>
<p>Class lists: <b>AID</b> (30 aerial scene classes), <b>RESISC45</b> (45), <b>EuroSAT</b> (10 land-cover
classes), your own class names typed as <i>lake; forest; farmland</i>, or a text file with one class per line (<i>LABEL</i> or <i>LABEL = prompt words</i>;
lines starting with # are comments).</p>
<p>Outputs, in the raster's CRS: a <b>class raster</b> (the most probable class per pixel from the
covering tiles, with a colour table and class names; its legend style is loaded with it), optionally
the per-class <b>probabilities</b>, and the <b>tiles</b> with their top-k classes and probabilities.</p>"""

#: the bundled class lists (resources/classes/, shipped with the plugin), then a file, then typed names
CLASS_SETS = (*((info.label, info.key) for info in class_lists()), ("Class list file (below)", ""),
              ("Class names (below)", "names"))


class ClassifyAlgorithm(WorkerAlgorithm):
    model_family = "clip"

    def name(self) -> str:
        return "classify"

    def displayName(self) -> str:  # noqa: N802
        return "Zero-shot classification"

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP

    def tags(self) -> list[str]:
        return ["clip", "zero-shot", "classification", "scene classes", "land cover", "aid", "resisc45", "eurosat"]

    def initAlgorithm(self, config=None):  # noqa: N802
        integer = enum("Qgis.ProcessingNumberParameterType.Integer", "QgsProcessingParameterNumber.Type.Integer")
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a file-backed layer)"))
        self.addParameter(QgsProcessingParameterEnum(
            "CLASSES", "Classes", options=[label for label, _key in CLASS_SETS], defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(
            "CLASSES_FILE", "Class list file (one class per line), for \"Class list file\"", optional=True,
            fileFilter="Text files (*.txt);;All files (*)"))
        self.addParameter(QgsProcessingParameterString(
            "CLASS_NAMES", "Class names separated by ; (LABEL or LABEL = prompt words), for \"Class names\"",
            defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "TOP_K", "Classes per tile", type=integer, defaultValue=3, minValue=1, maxValue=45))
        self.add_model_parameters()
        self.add_grid_parameter("256")
        self.add_area_parameter()
        self.add_bands_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_CLASSES", "Class raster"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_PROBABILITIES", "Class probabilities", optional=True, createByDefault=False))
        polygon = enum("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT_TILES", "Tiles with their top classes",
                                                            type=polygon))

    def classes(self, parameters, context) -> str | list[str]:
        key = CLASS_SETS[self.parameterAsEnum(parameters, "CLASSES", context)][1]
        if key == "names":
            names = [" ".join(n.split()) for n in self.parameterAsString(parameters, "CLASS_NAMES", context).split(";")]
            names = [n for n in names if n]
            if len(names) < 2:
                raise QgsProcessingException("type at least two class names separated by ; (e.g. lake; forest; farmland)")
            return names
        if key:
            return key
        path = self.parameterAsFile(parameters, "CLASSES_FILE", context).strip()
        if not path:
            raise QgsProcessingException("choose a class list, or give a class list file (one class per line)")
        if not Path(path).is_file():
            raise QgsProcessingException(f"{path}: the class list file does not exist")
        return path

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        scene = self.scene_path(layer)
        probabilities = self.parameterAsOutputLayer(parameters, "OUTPUT_PROBABILITIES", context)
        spec = specs.classify(
            scene, self.classes(parameters, context), self.work_dir(), self.model_spec(parameters, context),
            top_k=self.parameterAsInt(parameters, "TOP_K", context), grid=self.grid(parameters, context),
            probabilities=bool(probabilities), bands=self.bands(parameters, context),
            aoi=self.area(parameters, context, feedback),
        )
        outcome = self.run_job(spec, feedback)
        classes_tif = result_file(outcome, "classes", (".tif", ".tiff"))
        legend = Path(classes_tif).with_suffix(".qml")
        results = {"OUTPUT_CLASSES": self.copy_raster(
            classes_tif, self.parameterAsOutputLayer(parameters, "OUTPUT_CLASSES", context), None,
            style_file=legend if legend.is_file() else None)}
        self.style_when_loaded(context, results["OUTPUT_CLASSES"], legend if legend.is_file() else None,
                               f"classes · {layer.name()}")
        if probabilities:
            source = result_file(outcome, "raster", (".tif", ".tiff"), name="probabilities.tif")
            results["OUTPUT_PROBABILITIES"] = self.copy_raster(source, probabilities, None)
        gpkg = result_file(outcome, "tiles", (".gpkg",), fallback_roles=("vectors",))
        results["OUTPUT_TILES"] = self.copy_features(gpkg, self.layer_name(outcome, gpkg, "tiles"), parameters,
                                                     "OUTPUT_TILES", context, feedback)
        self.style_when_loaded(context, results["OUTPUT_TILES"], "tile_classes", f"tile classes · {layer.name()}")
        return results
