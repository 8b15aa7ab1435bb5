"""The rs-vlm dock: ask a raster layer (all of it, or the visible part) a question; caption and
classify its tiles. Every run is a QgsTask on the persistent worker; results arrive as styled
layers grouped under the query."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsRasterLayer
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QStringListModel
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QCompleter,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import area, results, settings, sources, specs
from .compat import enum
from .settings_dialog import SettingsDialog, describe_hello
from .shipped import class_lists, icon_path
from .tasks import LOG_TAG, WorkerJobTask
from .worker import JobOutcome, WorkerError, WorkerService, check_interpreter

RECENT_QUERIES = 20
#: the bundled class lists (resources/classes/, shipped with the plugin), then a file, then typed names
CLASS_SETS = (*((info.label, info.key) for info in class_lists()), ("Class list from a file...", ""),
              ("Type class names...", "names"))


class RsVlmPanel(QgsDockWidget):
    """The dock widget. ``iface`` gives the map canvas and message bar; ``service`` the worker."""

    def __init__(self, iface, service: WorkerService, parent=None):
        super().__init__("rs-vlm", parent)
        self.setObjectName("RsVlmPanel")
        self.iface = iface
        self.service = service
        self.tasks: list[WorkerJobTask] = []
        self._classes_file = ""
        self._class_names: list[str] = []
        self._closed = False

        body = QWidget()
        layout = QVBoxLayout(body)

        source = QGroupBox("Imagery")
        grid = QGridLayout(source)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(enum("Qgis.LayerFilter.RasterLayer", "QgsMapLayerProxyModel.Filter.RasterLayer"))
        self.layer_combo.setToolTip("a raster layer backed by a file (GeoTIFF, COG, VRT, JPEG2000...)")
        grid.addWidget(QLabel("Layer"), 0, 0)
        grid.addWidget(self.layer_combo, 0, 1, 1, 2)
        self.whole = QRadioButton("Whole layer")
        self.visible = QRadioButton("Visible map extent")
        self.whole.setChecked(True)
        self.visible.setToolTip("only the part of the layer inside the map view (a VRT window, no copy)")
        self._area = QButtonGroup(self)
        self._area.addButton(self.whole)
        self._area.addButton(self.visible)
        grid.addWidget(self.whole, 1, 1)
        grid.addWidget(self.visible, 1, 2)
        self.area_combo = QgsMapLayerComboBox()
        self.area_combo.setFilters(enum("Qgis.LayerFilter.PolygonLayer",
                                        "QgsMapLayerProxyModel.Filter.PolygonLayer"))
        self.area_combo.setAllowEmptyLayer(True, "None: the whole raster")
        self.area_combo.setLayer(None)
        self.area_combo.setToolTip("only tiles overlapping these polygons (any CRS) are read and encoded; the "
                                   "heat map is nodata outside them")
        self.area_selected = QCheckBox("Selected features only")
        self.area_selected.setToolTip("the area is the selected polygons of the layer, not all of them")
        grid.addWidget(QLabel("Area"), 2, 0)
        grid.addWidget(self.area_combo, 2, 1)
        grid.addWidget(self.area_selected, 2, 2)
        self.archive_edit = QLineEdit()
        self.archive_edit.setPlaceholderText("none: ask the layer")
        self.archive_edit.setClearButtonEnabled(True)
        self.archive_edit.setToolTip("an archive folder made by `rsvlm index`: the query then searches every "
                                     "indexed scene (the best tiles, as footprints) instead of the layer")
        archive_button = QToolButton()
        archive_button.setText("...")
        archive_button.setToolTip("choose the archive folder")
        archive_button.clicked.connect(self._choose_archive)
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 10_000)
        self.top_k.setValue(20)
        self.top_k.setPrefix("best ")
        self.top_k.setToolTip("how many of the archive's tiles to return")
        archive_row = QHBoxLayout()
        archive_row.addWidget(self.archive_edit, 1)
        archive_row.addWidget(archive_button)
        grid.addWidget(QLabel("Archive"), 3, 0)
        grid.addLayout(archive_row, 3, 1)
        grid.addWidget(self.top_k, 3, 2)
        layout.addWidget(source)

        ask = QGroupBox("Find it on the map")
        row = QHBoxLayout(ask)
        self.query = QLineEdit()
        self.query.setPlaceholderText("describe what to find, e.g. \"airplanes parked near a terminal\"")
        self.query.setClearButtonEnabled(True)
        self.query.returnPressed.connect(self.run_localize)
        self._recent = QStringListModel(self._load_recent())
        completer = QCompleter(self._recent, self)
        completer.setCaseSensitivity(enum("Qt.CaseSensitivity.CaseInsensitive"))
        self.query.setCompleter(completer)
        self.localize_button = QPushButton("Localize")
        self.localize_button.setDefault(True)
        self.localize_button.setToolTip("heat map and hot spots of the query (Enter)")
        self.localize_button.clicked.connect(self.run_localize)
        row.addWidget(self.query, 1)
        row.addWidget(self.localize_button)
        layout.addWidget(ask)

        describe = QGroupBox("Describe the tiles")
        drow = QGridLayout(describe)
        self.caption_button = QPushButton("Caption tiles")
        self.caption_button.setToolTip("a sentence per tile, from the captioning model")
        self.caption_button.clicked.connect(self.run_caption)
        self.class_set = QComboBox()
        for label, key in CLASS_SETS:
            self.class_set.addItem(label, key)
        self.class_set.activated.connect(self._class_set_chosen)
        self.classify_button = QPushButton("Classify")
        self.classify_button.setToolTip("zero-shot scene classes per tile, from the CLIP model")
        self.classify_button.clicked.connect(self.run_classify)
        drow.addWidget(self.caption_button, 0, 0)
        drow.addWidget(self.class_set, 1, 0)
        drow.addWidget(self.classify_button, 1, 1)
        drow.setColumnStretch(0, 1)
        layout.addWidget(describe)

        progress_row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_all)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        layout.addLayout(progress_row)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        footer = QHBoxLayout()
        self.worker_label = QLabel()
        self.worker_label.setWordWrap(True)
        self.settings_button = QToolButton()
        self.settings_button.setIcon(QgsApplication.getThemeIcon("/mActionOptions.svg"))
        self.settings_button.setToolTip("rs-vlm settings: Python, models, device, results folder")
        self.settings_button.clicked.connect(self.open_settings)
        footer.addWidget(self.worker_label, 1)
        footer.addWidget(self.settings_button)
        layout.addLayout(footer)
        layout.addStretch(1)

        self.setWidget(body)
        self.setWindowIcon(QIcon(icon_path()))
        self.refresh_worker_label()

    # -- actions -----------------------------------------------------------------------------------

    def run_localize(self) -> WorkerJobTask | None:
        query = " ".join(self.query.text().split())
        if not query:
            self.report("type what to look for first, e.g. \"a harbour with boats\"", Qgis.MessageLevel.Warning)
            return None
        self._remember(query)
        if self.archive_edit.text().strip():
            return self.run_archive_search(query)
        return self._start("localize", query, lambda scene, out, config, aoi: specs.localize(
            scene, [query], out, config.clip.to_spec(config.device), grid=config.grid or None, aoi=aoi))

    def run_archive_search(self, query: str) -> WorkerJobTask | None:
        """The tiles of the chosen archive best matching ``query`` (an ``archive-search`` job); they
        arrive as a layer of footprints (EPSG:4326) ranked by score."""
        archive = Path(self.archive_edit.text().strip()).expanduser()
        config = settings.load_config()
        try:
            check_interpreter(config.python)
            if not archive.is_dir():
                raise OSError(f"{archive}: not a folder; choose an archive made by `rsvlm index`")
            out = _fresh_folder(config.results_dir() / _safe(archive.name), "archive-search")
        except (WorkerError, OSError) as exc:
            self.report(str(exc), Qgis.MessageLevel.Critical)
            return None
        spec = specs.archive_search(str(archive), query, str(out / "results.gpkg"), config.clip.to_spec(config.device),
                                    top_k=self.top_k.value())
        group = f"{query} · archive {archive.name}"
        task = WorkerJobTask(f"rs-vlm: {query} in archive {archive.name}", self.service, spec,
                             lambda outcome: self._finished(task, "archive-search", query, group, None, outcome))
        task.stageChanged.connect(self._stage)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        self._busy()
        self.status.setText(f"{query}: starting the worker..." if not self.service.running else f"{query}: queued")
        return task

    def run_caption(self) -> WorkerJobTask | None:
        return self._start("caption", "captions", lambda scene, out, config, aoi: specs.caption(
            scene, out / "captions.gpkg", config.captioner.to_spec(config.device), grid=config.grid or None,
            aoi=aoi))

    def run_classify(self) -> WorkerJobTask | None:
        key = self.class_set.currentData()
        if key == "names":
            if not self._class_names:
                self._class_set_chosen(self.class_set.currentIndex())
            classes, label = list(self._class_names), ", ".join(self._class_names)
            label = label if len(label) <= 40 else label[:37] + "..."
        elif key:
            classes, label = key, self.class_set.currentText().split(" (")[0]
        else:
            if not self._classes_file:
                self._class_set_chosen(self.class_set.currentIndex())
            classes = self._classes_file
            label = Path(classes).stem
        if not classes:
            return None
        return self._start("classify", f"classes: {label}", lambda scene, out, config, aoi: specs.classify(
            scene, classes, out, config.clip.to_spec(config.device), grid=config.grid or None, aoi=aoi))

    def shut_down(self) -> None:
        """The plugin is being unloaded: cancel every run; results arriving later are dropped."""
        self._closed = True
        self.cancel_all()

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.status.setText("Cancelling...")

    def open_settings(self) -> None:
        SettingsDialog(self.iface.mainWindow(), on_saved=self.refresh_worker_label).exec()

    # -- running -----------------------------------------------------------------------------------

    def _start(self, kind: str, title: str, make_spec: Callable) -> WorkerJobTask | None:
        layer = self.layer_combo.currentLayer()
        config = settings.load_config()
        try:
            check_interpreter(config.python)
            scene = sources.raster_path(layer)
            out = self._output_dir(config, layer, kind)
            if self.visible.isChecked():
                canvas = self.iface.mapCanvas()
                extent = sources.layer_crs_extent(layer, canvas.extent(), canvas.mapSettings().destinationCrs())
                scene = str(sources.write_window_vrt(layer, extent, out / f"{Path(scene).stem}_view.vrt"))
            aoi = self._write_area(out)
        except (WorkerError, sources.SourceError, area.AreaError, OSError) as exc:
            self.report(str(exc), Qgis.MessageLevel.Critical)
            return None
        spec = make_spec(scene, out, config, aoi)
        group = title if kind == "localize" else f"{title} · {layer.name()}"
        task = WorkerJobTask(f"rs-vlm: {title} on {layer.name()}", self.service, spec,
                             lambda outcome: self._finished(task, kind, title, group, layer, outcome))
        task.stageChanged.connect(self._stage)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        self._busy()
        self.status.setText(f"{title}: starting the worker..." if not self.service.running else f"{title}: queued")
        return task

    def _write_area(self, out: Path) -> str | None:
        """The chosen area of interest written into the run's folder (the spec's ``aoi``), or None."""
        layer = self.area_combo.currentLayer()
        if layer is None:
            return None
        return area.write_area(layer, out, selected_only=self.area_selected.isChecked())

    def _output_dir(self, config, layer: QgsRasterLayer, kind: str) -> Path:
        return _fresh_folder(config.results_dir() / _safe(layer.name()), kind)

    def _stage(self, text: str, percent: float) -> None:
        self.status.setText(text)
        if percent >= 0:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(percent))
        else:
            self.progress.setRange(0, 0)

    def _busy(self, done: bool = False) -> None:
        """Progress bar and Cancel button for the tasks still running (``done``: the last one succeeded)."""
        self.cancel_button.setEnabled(bool(self.tasks))
        if self.tasks:
            self.progress.setRange(0, 0)
            self.progress.setTextVisible(True)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(100 if done else 0)
            self.progress.setTextVisible(done)

    def _finished(self, task: WorkerJobTask, kind: str, title: str, group: str, layer, outcome: JobOutcome) -> None:
        if self._closed:
            return
        if task in self.tasks:
            self.tasks.remove(task)
        self._busy(done=outcome.ok)
        self.refresh_worker_label()
        if outcome.status == "cancelled":
            self.status.setText(f"{title}: cancelled.")
            self.report(f"{title}: cancelled", Qgis.MessageLevel.Info)
            return
        if not outcome.ok:
            self.status.setText(f"{title}: failed.")
            self.report(outcome.message, Qgis.MessageLevel.Critical)
            for line in outcome.logs[-20:]:
                QgsMessageLog.logMessage(line, LOG_TAG, Qgis.MessageLevel.Info)
            return
        try:
            layers = results.result_layers(outcome, layer, title=group, group=title if kind == "localize" else None)
        except results.ResultError as exc:
            self.report(str(exc), Qgis.MessageLevel.Critical)
            return
        results.add_group(layers, group)
        summary = _summary(kind, title, outcome)
        self.status.setText(summary)
        self.report(summary, Qgis.MessageLevel.Success, duration=5)

    # -- helpers -----------------------------------------------------------------------------------

    def report(self, message: str, level, duration: int | None = None) -> None:
        """A message-bar line (errors stay until closed) and the same line in the rs-vlm log."""
        if duration is None:
            duration = 0 if level == Qgis.MessageLevel.Critical else 8
        self.iface.messageBar().pushMessage("rs-vlm", message, level=level, duration=duration)
        QgsMessageLog.logMessage(message, LOG_TAG, level)

    def refresh_worker_label(self) -> None:
        config = settings.load_config()
        model = config.clip.describe()
        hello = self.service.hello
        if hello is not None:
            state = f"worker ready · {describe_hello(hello)}"
        elif not config.python:
            state = "no rs-vlm engine yet: Raster > rs-vlm > Set up rs-vlm..., or choose its Python in the settings"
        else:
            state = "worker starts with the first run"
        self.worker_label.setText(f"<small>Model: {model} · device {config.device}<br>{state}</small>")

    def _class_set_chosen(self, index: int) -> None:
        key = self.class_set.itemData(index)
        if key == "names":
            text, ok = QInputDialog.getText(
                self, "Class names", "Class names separated by ; (LABEL or LABEL = prompt words), at least two:",
                QLineEdit.EchoMode.Normal, "; ".join(self._class_names))
            names = [" ".join(n.split()) for n in text.split(";")] if ok else []
            names = [n for n in names if n]
            if ok and len(names) < 2:
                self.report("type at least two class names separated by ; (e.g. lake; forest; farmland)",
                            Qgis.MessageLevel.Warning)
            if len(names) >= 2:
                self._class_names = names
                self.class_set.setItemText(index, f"Classes: {', '.join(names)}"[:60])
            return
        if key:
            return
        path, _filter = QFileDialog.getOpenFileName(self, "Class list (one class name per line)", "",
                                                    "Text files (*.txt);;All files (*)")
        if path:
            self._classes_file = path
            self.class_set.setItemText(index, f"Classes from {Path(path).name}")

    def _choose_archive(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Archive folder (made by rsvlm index)",
                                                  self.archive_edit.text().strip())
        if folder:
            self.archive_edit.setText(folder)

    def _load_recent(self) -> list[str]:
        raw = settings.value("recent_queries")
        return [q for q in raw.split("\n") if q.strip()] if raw else []

    def _remember(self, query: str) -> None:
        recent = [query] + [q for q in self._recent.stringList() if q != query]
        recent = recent[:RECENT_QUERIES]
        self._recent.setStringList(recent)
        settings.set_value("recent_queries", "\n".join(recent))


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return cleaned[:60] or "layer"


def _fresh_folder(base: Path, kind: str) -> Path:
    """A new ``base/<kind>-<time stamp>`` folder for one run's results."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, n = base / f"{kind}-{stamp}", 2
    while out.exists():
        out, n = base / f"{kind}-{stamp}-{n}", n + 1
    out.mkdir(parents=True)
    return out


def _summary(kind: str, title: str, outcome: JobOutcome) -> str:
    summary = outcome.result.summary if outcome.result is not None else {}
    if kind == "archive-search":
        hits, scenes = len(summary.get("hits") or []), summary.get("scenes_searched", "?")
        return f"'{title}': the best {hits} tile{'s' if hits != 1 else ''} of {scenes} scene(s) in the archive"
    if kind == "localize":
        queries = summary.get("queries") or []
        if queries and isinstance(queries[0], dict) and "hotspots" in queries[0]:
            n = queries[0]["hotspots"]
            return f"'{title}': {n} hot spot{'s' if n != 1 else ''}"
        return f"'{title}': done"
    return f"{title}: done"
