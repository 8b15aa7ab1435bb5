"""What every rs-vlm Processing algorithm shares: model/device parameters, running a job in the
worker with progress and cancel wired to Processing's feedback, copying results to the outputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from .. import settings
from ..area import source_spec as area_spec
from ..compat import enum
from ..results import apply_style
from ..settings import ModelChoice
from ..shipped import icon_path
from ..sources import SourceError, raster_path
from ..worker import JobOutcome, WorkerService, run_once

DEVICE_CHOICES = ("from rs-vlm settings", "auto", "cpu", "cuda", "mps")

_shared_service: WorkerService | None = None


def set_shared_service(service: WorkerService | None) -> None:
    """In the QGIS desktop the plugin shares its persistent worker with the algorithms (models stay
    loaded across runs and batch rows); without one (qgis_process) each run starts a worker."""
    global _shared_service
    _shared_service = service


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Applies a shipped .qml to an output layer when Processing loads it into the project."""

    _alive: list[StyleOnLoad] = []  # Processing does not keep Python post-processors alive

    def __init__(self, style: str | Path):
        super().__init__()
        self.style = style

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS's name
        if isinstance(self.style, Path):
            layer.loadNamedStyle(str(self.style))
            layer.triggerRepaint()
        else:
            apply_style(layer, self.style)

    @classmethod
    def create(cls, style: str | Path) -> StyleOnLoad:
        instance = cls(style)
        cls._alive.append(instance)
        return instance


def advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    flag = enum("Qgis.ProcessingParameterFlag.Advanced", "QgsProcessingParameterDefinition.Flag.FlagAdvanced")
    parameter.setFlags(parameter.flags() | flag)
    return parameter


class WorkerAlgorithm(QgsProcessingAlgorithm):
    """Base of the algorithms; subclasses define name, parameters and ``processAlgorithm``."""

    #: "clip" or "caption": which model of the settings is the default
    model_family = "clip"
    #: run on the plugin's persistent worker (models stay loaded); False: a one-shot worker of its own,
    #: for long batch jobs (dataset builds, training) that must not hold up or disturb the panel
    persistent_worker = True

    def createInstance(self):  # noqa: N802
        return type(self)()

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def flags(self):
        return super().flags() | enum("Qgis.ProcessingAlgorithmFlag.CanCancel",
                                      "QgsProcessingAlgorithm.Flag.FlagCanCancel")

    def helpUrl(self) -> str:  # noqa: N802
        return ""

    # -- shared parameters -------------------------------------------------------------------------

    def add_model_parameters(self) -> None:
        what = "captioning (CoCa)" if self.model_family == "caption" else "CLIP"
        self.addParameter(QgsProcessingParameterString(
            "MODEL", f"{what} model: catalogue name or checkpoint file (empty: rs-vlm settings)",
            defaultValue="", optional=True))
        self.addParameter(advanced(QgsProcessingParameterString(
            "ARCH", "open_clip architecture of the checkpoint (e.g. ViT-B-32)", defaultValue="", optional=True)))
        self.addParameter(advanced(QgsProcessingParameterFile(
            "MODEL_CONFIG", "open_clip model config (.json) of a custom architecture", optional=True,
            extension="json")))
        self.addParameter(QgsProcessingParameterEnum(
            "DEVICE", "Device", options=list(DEVICE_CHOICES), defaultValue=0))

    def add_grid_parameter(self, default: str = "") -> None:
        what = f"default {default}" if default else "empty: the SeLo grid 256/512/768 with half-window shifts"
        self.addParameter(advanced(QgsProcessingParameterString(
            "GRID", f"Tile grid: window sizes in pixels and overlap, e.g. 256,512@0.5 ({what})",
            defaultValue=default, optional=True)))

    def add_bands_parameter(self) -> None:
        self.addParameter(advanced(QgsProcessingParameterString(
            "BANDS", "Bands to read as red, green, blue (or one grey band), e.g. 4,3,2 (empty: the first three)",
            defaultValue="", optional=True)))

    def add_area_parameter(self) -> None:
        polygon = enum("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")
        self.addParameter(QgsProcessingParameterFeatureSource(
            "AREA", "Area of interest (polygons, any CRS; empty: the whole raster)", [polygon], optional=True))

    def area(self, parameters, context, feedback) -> str | None:
        """The AREA parameter as a spec's ``aoi`` (``FILE[:LAYER]``): the layer's file, or a GeoPackage
        QGIS writes (selected features only, a memory layer, a database layer), in the layer's CRS."""
        if self.parameterAsSource(parameters, "AREA", context) is None:
            return None
        path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, "AREA", context, ["gpkg", "shp", "geojson", "fgb"], "gpkg", feedback)
        if not path:
            raise QgsProcessingException("the area of interest could not be written to a file")
        return area_spec(path, layer)

    def bands(self, parameters, context) -> list[int] | None:
        """The BANDS parameter as 1-based band numbers (None: the worker's default)."""
        text = self.parameterAsString(parameters, "BANDS", context).strip()
        if not text:
            return None
        try:
            bands = [int(part) for part in text.replace(";", ",").replace(" ", ",").split(",") if part]
        except ValueError:
            bands = []
        if len(bands) not in (1, 3) or min(bands) < 1:
            raise QgsProcessingException(
                f"bands {text!r}: give three 1-based band numbers for red, green and blue (e.g. 4,3,2) "
                "or one grey band")
        return bands

    def model_spec(self, parameters, context) -> dict:
        config = settings.load_config()
        default = config.captioner if self.model_family == "caption" else config.clip
        text = self.parameterAsString(parameters, "MODEL", context).strip()
        arch = self.parameterAsString(parameters, "ARCH", context).strip()
        model_config = self.parameterAsFile(parameters, "MODEL_CONFIG", context).strip()
        choice = ModelChoice(text, arch, model_config) if (text or arch or model_config) else default
        device_index = self.parameterAsEnum(parameters, "DEVICE", context)
        device = config.device if device_index == 0 else DEVICE_CHOICES[device_index]
        return choice.to_spec(device)

    def grid(self, parameters, context) -> str | None:
        text = self.parameterAsString(parameters, "GRID", context).strip()
        return text or None

    def scene_path(self, layer) -> str:
        try:
            return raster_path(layer)
        except SourceError as exc:
            raise QgsProcessingException(str(exc)) from None

    # -- running -----------------------------------------------------------------------------------

    def work_dir(self) -> Path:
        folder = Path(QgsProcessingUtils.tempFolder()) / f"rsvlm-{self.name()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def run_job(self, spec: dict, feedback) -> JobOutcome:
        """Run ``spec`` in the worker; progress and log lines go to ``feedback``; QgsProcessingException
        (with the worker's one-line message) when it fails or is cancelled."""
        model = f" (model: {_describe_model(spec['model'])})" if isinstance(spec.get("model"), dict) else ""
        feedback.pushInfo(f"rs-vlm job: {spec.get('kind')}{model}")

        def on_event(event) -> None:
            if event.type == "progress":
                if event.fraction is not None:
                    feedback.setProgress(100.0 * event.fraction)
                feedback.setProgressText(event.stage)
            elif event.type == "log":
                if event.level in ("warning", "error"):
                    feedback.reportError(event.message, False)
                elif event.level != "debug":
                    feedback.pushInfo(event.message)
            elif event.type == "started":
                feedback.pushInfo(f"worker started: {getattr(event, 'title', '')}")

        service = _shared_service if self.persistent_worker else None
        if service is not None:
            outcome = service.run(spec, on_event, feedback.isCanceled)
        else:
            from qgis.core import QgsApplication

            outcome = run_once(settings.load_config(), spec, on_event, feedback.isCanceled,
                               qgis_prefix=QgsApplication.prefixPath(),
                               on_stderr=lambda line: feedback.pushDebugInfo(line))
        if outcome.status == "cancelled":
            raise QgsProcessingException(f"rs-vlm: {outcome.message or 'cancelled'}")
        if not outcome.ok:
            feedback.reportError(outcome.message, True)
            raise QgsProcessingException(f"rs-vlm: {outcome.message}")
        return outcome

    # -- outputs -----------------------------------------------------------------------------------

    def copy_raster(self, source: str, target: str, style: str | None, style_file: Path | None = None) -> str:
        """Copy the worker's GeoTIFF to the destination Processing chose (atomically), with its style
        beside it as ``<name>.qml`` (a shipped style by name, or a .qml the worker wrote)."""
        target_path = Path(self.copy_file(source, target))
        aux = Path(f"{source}.aux.xml")  # GDAL's category names and statistics
        if aux.is_file():
            shutil.copyfile(aux, f"{target_path}.aux.xml")
        if style and style_file is None:
            from ..shipped import style_path

            with contextlib.suppress(FileNotFoundError):
                style_file = style_path(style)
        if style_file is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(style_file, target_path.with_suffix(".qml"))
        return str(target_path)

    def copy_file(self, source: str, target: str) -> str:
        """Copy ``source`` to ``target`` atomically (a temporary sibling renamed into place)."""
        target_path = Path(target)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = target_path.with_name(f".{target_path.name}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return str(target_path)

    def layer_name(self, outcome: JobOutcome, gpkg: str, default: str) -> str:
        """The GeoPackage layer the worker named for ``gpkg`` in its result, else ``default``."""
        for f in outcome.files():
            if f.path == gpkg and f.layers:
                return f.layers[0]
        return default

    def copy_features(self, gpkg: str, layer_name: str, parameters, output: str, context, feedback,
                      optional: bool = False) -> str | None:
        """Copy a GeoPackage layer the worker wrote into the feature sink ``output`` (None when an
        optional output was not asked for)."""
        source = QgsVectorLayer(f"{gpkg}|layername={layer_name}", layer_name, "ogr")
        if not source.isValid():
            raise QgsProcessingException(f"{gpkg}: cannot open the worker's layer '{layer_name}'")
        sink, dest_id = self.parameterAsSink(parameters, output, context, source.fields(), source.wkbType(),
                                             source.crs())
        if sink is None:
            if optional:
                return None
            raise QgsProcessingException(self.invalidSinkError(parameters, output))
        fast = enum("QgsFeatureSink.Flag.FastInsert")
        for feature in source.getFeatures():
            if feedback.isCanceled():
                break
            sink.addFeature(feature, fast)
        del source
        return dest_id

    def style_when_loaded(self, context, dest_id: str, style: str | Path | None, name: str) -> None:
        """Name the output layer Processing loads, and style it (a shipped style, or a .qml file)."""
        if dest_id and context.willLoadLayerOnCompletion(dest_id):
            details = context.layerToLoadOnCompletionDetails(dest_id)
            details.name = name
            if style is not None:
                details.setPostProcessor(StyleOnLoad.create(style))


def _describe_model(model: dict) -> str:
    name = model.get("name") or (Path(model["checkpoint"]).name if model.get("checkpoint") else "catalogue default")
    return f"{name}, device {model.get('device', 'auto')}"


def result_file(outcome: JobOutcome, role: str, suffixes: tuple[str, ...] = (),
                fallback_roles: tuple[str, ...] = (), name: str | None = None) -> str:
    """The path of a result file: the one called ``name`` if given and present, else the first with
    ``role`` (then any of ``fallback_roles``) and one of ``suffixes``."""
    if name is not None:
        for f in outcome.files():
            if Path(f.path).name == name:
                return f.path
    for wanted in (role, *fallback_roles):
        for f in outcome.files(wanted):
            if not suffixes or f.path.lower().endswith(suffixes):
                return f.path
    raise QgsProcessingException(f"rs-vlm: the worker's result has no {name or role} file")
