"""The main window: open a scene, ask it questions, see the answers as layers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QSettings, QStandardPaths, Qt, QUrl
from PyQt6.QtGui import QAction, QColor, QDesktopServices, QKeySequence, QPen
from PyQt6.QtWidgets import (
    QCompleter,
    QDockWidget,
    QFileDialog,
    QGraphicsPathItem,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from rs_vlm_app import __version__
from rs_vlm_app.errors import UserError
from rs_vlm_app.gui.archive_search import ArchiveSearchDialog, best_hit_scene
from rs_vlm_app.gui.area import AreaOfInterest
from rs_vlm_app.gui.jobs import CANCELLED, DONE, FAILED, Job, JobManager
from rs_vlm_app.gui.jobs_panel import JobsPanel
from rs_vlm_app.gui.layers import HeatmapLayer, Layer, VectorLayer, gpkg_layers, painter_path
from rs_vlm_app.gui.map_view import Z_HIGHLIGHT, MapView
from rs_vlm_app.gui.model_picker import ModelChoice, ModelPicker
from rs_vlm_app.gui.panels import InfoPanel, LayerPanel, MessageBar
from rs_vlm_app.gui.tile_jobs import CaptionDialog, ClassifyDialog
from rs_vlm_app.gui.tools import install as install_tools
from rs_vlm_app.jobs import client, protocol

MAX_RECENT = 10
VECTOR_SUFFIXES = (".gpkg",)
RASTER_FILTER = "Rasters (*.tif *.tiff *.vrt *.jp2 *.png *.jpg *.jpeg *.img);;All files (*)"


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self.settings = settings or QSettings()
        self.setWindowTitle("rs-vlm")
        self.resize(1400, 900)
        self.scene_path: Path | None = None
        self.jobs = JobManager(self)
        self._query_jobs: dict[str, str] = {}  # job id -> query
        self._highlight: QGraphicsPathItem | None = None
        self._build()
        self.jobs.job_finished.connect(self._job_finished)
        self.jobs.worker_ready.connect(self._worker_ready)
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)

    # -- layout -----------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.map = MapView()
        self.map.mouse_moved.connect(self._hover)
        self.map.clicked.connect(self._click)
        self.map.read_failed.connect(lambda text: self.messages.show_message(
            f"Cannot read the scene any more: {text}. What is on the map stays; reopen the file when it is back.",
            "warning"))
        self.map.files_dropped.connect(self.open_paths)
        self.messages = MessageBar()
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        holder = QWidget()
        holder_layout = QVBoxLayout(holder)
        holder_layout.setContentsMargins(6, 6, 6, 0)
        holder_layout.addWidget(self.messages)
        column.addWidget(holder)
        column.addWidget(self.map, 1)
        self.setCentralWidget(central)
        self.setAcceptDrops(True)

        self.layers = LayerPanel(self.map.scene())
        self.layers.zoom_requested.connect(self._zoom_to)
        self.layers.export_requested.connect(self._export_group_dialog)
        self.layers.layers_changed.connect(self._clear_highlight)
        self.layers.problem.connect(lambda text: self.messages.show_message(text, "error"))
        self.layers_dock = self._dock("Layers", self.layers, Qt.DockWidgetArea.LeftDockWidgetArea, "layersDock")
        self.info = InfoPanel()
        self.info_dock = self._dock("Identify", self.info, Qt.DockWidgetArea.RightDockWidgetArea, "infoDock")
        self.jobs_panel = JobsPanel(self.jobs)
        self.jobs_panel.open_result.connect(self.open_job_result)
        self.jobs_dock = self._dock("Jobs", self.jobs_panel, Qt.DockWidgetArea.BottomDockWidgetArea, "jobsDock")
        self.resizeDocks([self.layers_dock, self.info_dock], [280, 300], Qt.Orientation.Horizontal)
        self.resizeDocks([self.jobs_dock], [180], Qt.Orientation.Vertical)

        self.area = AreaOfInterest(self, self.messages.show_message)  # Area › Choose area…: the jobs' ``aoi``
        self._actions()
        self._toolbar()
        self._menus()
        self.coords = QLabel()
        self.crs_label = QLabel()
        self.worker_label = QLabel("worker: not started")
        self.worker_label.setToolTip("The worker process runs the models; it starts with the first query")
        bar = self.statusBar()
        bar.addWidget(self.coords, 1)
        bar.addPermanentWidget(self.area.label)
        bar.addPermanentWidget(self.crs_label)
        bar.addPermanentWidget(self.worker_label)
        self._update_enabled()

    def _dock(self, title: str, widget: QWidget, area, name: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _actions(self) -> None:
        self.open_action = QAction("&Open scene…", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self._open_dialog)
        self.add_layer_action = QAction("&Add layer…", self, shortcut="Ctrl+L")
        self.add_layer_action.setToolTip("Add a heat map GeoTIFF or a GeoPackage (hot spots, tile captions, classes)")
        self.add_layer_action.triggered.connect(self._add_layer_dialog)
        self.search_archive_action = QAction("Searc&h archive…", self)
        self.search_archive_action.setToolTip("The tiles of an indexed archive (rsvlm index) that best match a "
                                              "query, as footprints on the map")
        self.search_archive_action.triggered.connect(self._search_archive_dialog)
        self.run_spec_action = QAction("Run job &spec…", self)
        self.run_spec_action.setToolTip("Run a job spec JSON file (see docs/jobs.md) in a worker of its own")
        self.run_spec_action.triggered.connect(self._run_spec_dialog)
        self.caption_action = QAction("&Caption tiles…", self)
        self.caption_action.setToolTip("Caption every tile of the scene with a CoCa model (a tiles layer)")
        self.caption_action.triggered.connect(self._caption_dialog)
        self.classify_action = QAction("C&lassify tiles…", self)
        self.classify_action.setToolTip("Zero-shot classes of every tile of the scene with the toolbar's CLIP model")
        self.classify_action.triggered.connect(self._classify_dialog)
        self.results_action = QAction("&Results folder…", self)
        self.results_action.triggered.connect(self._results_dialog)
        self.export_view_action = QAction("Export map &view as PNG…", self)
        self.export_view_action.triggered.connect(self._export_view_dialog)
        self.quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        self.zoom_full_action = QAction("Zoom to &scene", self, shortcut="Ctrl+0")
        self.zoom_full_action.triggered.connect(self.map.zoom_full)
        self.zoom_in_action = QAction("Zoom &in", self, shortcut=QKeySequence.StandardKey.ZoomIn)
        self.zoom_in_action.triggered.connect(lambda: self.map.zoom_by(1.5))
        self.zoom_out_action = QAction("Zoom &out", self, shortcut=QKeySequence.StandardKey.ZoomOut)
        self.zoom_out_action.triggered.connect(lambda: self.map.zoom_by(1 / 1.5))

    def _toolbar(self) -> None:
        bar = QToolBar("Main")
        bar.setObjectName("mainToolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar.addAction(self.open_action)
        bar.addSeparator()
        bar.addAction(self.zoom_full_action)
        bar.addAction(self.zoom_in_action)
        bar.addAction(self.zoom_out_action)
        bar.addSeparator()
        self.query = QLineEdit()
        self.query.setPlaceholderText("Ask the scene, e.g. “a large parking lot next to a warehouse”")
        self.query.setClearButtonEnabled(True)
        self.query.setMinimumWidth(320)
        self.query.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.query.returnPressed.connect(self.ask)
        self.query.textChanged.connect(lambda _t: self._update_enabled())
        history = self.settings.value("queries/history", [], type=list) or []
        self._completer = QCompleter(history, self)
        self._completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.query.setCompleter(self._completer)
        bar.addWidget(self.query)
        self.ask_button = QPushButton("Ask")
        self.ask_button.setDefault(True)
        self.ask_button.setStyleSheet("QPushButton { font-weight: 600; padding: 4px 14px; }")
        self.ask_button.clicked.connect(self.ask)
        bar.addWidget(self.ask_button)
        bar.addSeparator()
        self.model_picker = ModelPicker(self.settings)
        bar.addWidget(self.model_picker)
        self.addToolBar(bar)

    def _menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self._fill_recent()
        file_menu.addAction(self.add_layer_action)
        file_menu.addAction(self.search_archive_action)
        file_menu.addSeparator()
        file_menu.addAction(self.run_spec_action)
        file_menu.addAction(self.results_action)
        file_menu.addAction(self.export_view_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        tiles_menu = self.menuBar().addMenu("&Tiles")
        tiles_menu.addAction(self.caption_action)
        tiles_menu.addAction(self.classify_action)
        area_menu = self.menuBar().addMenu("&Area")
        area_menu.addAction(self.area.choose_action)
        area_menu.addAction(self.area.clear_action)
        view_menu = self.menuBar().addMenu("&View")
        for action in (self.zoom_full_action, self.zoom_in_action, self.zoom_out_action):
            view_menu.addAction(action)
        view_menu.addSeparator()
        for dock in (self.layers_dock, self.info_dock, self.jobs_dock):
            view_menu.addAction(dock.toggleViewAction())
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("About rs-vlm", self)
        about.triggered.connect(lambda: self.messages.show_message(
            f"rs-vlm {__version__}: ask questions of georeferenced imagery. Results are GeoTIFF and "
            "GeoPackage files you can also open in QGIS.", "info"))
        help_menu.addAction(about)
        self.tools = install_tools(self)  # Tools › Build dataset…, Fine-tune…; File › Open run…

    def _update_enabled(self) -> None:
        has_scene = self.scene_path is not None
        self.ask_button.setEnabled(has_scene and bool(self.query.text().strip()))
        for action in (self.add_layer_action, self.zoom_full_action, self.zoom_in_action,
                       self.zoom_out_action, self.export_view_action, self.caption_action, self.classify_action):
            action.setEnabled(has_scene)

    # -- opening files ----------------------------------------------------------------------------------

    def open_paths(self, paths: list[str]) -> None:
        """Open dropped or command-line files: rasters become the scene (or a heat-map layer when
        they are one of our heat maps and a scene is open), GeoPackages become layers."""
        for name in paths:
            path = Path(name)
            if path.suffix.lower() in VECTOR_SUFFIXES:
                self.add_vector_file(path)
            elif self.scene_path is not None and _is_heatmap(path):
                self.add_heatmap_file(path)
            else:
                self.open_scene(path)

    def open_scene(self, path: Path) -> bool:
        """Show ``path`` as the scene; on failure say why and keep the current scene."""
        path = Path(path)
        if not path.exists():
            self.messages.show_message(f"{path}: file not found", "error")
            self._forget_recent(path)
            return False
        try:
            frame = self.map.open_scene(path)
        except UserError as exc:
            self.messages.show_message(f"{exc}. The current scene stays open.", "error")
            return False
        except Exception as exc:  # an unexpected reader problem must not take the window down
            self.messages.show_message(f"{path}: cannot open this file ({type(exc).__name__}: {exc})", "error")
            return False
        self.layers.clear()
        self.info.pinned = False
        self.info.show_features([], None)
        self.scene_path = path
        self.setWindowTitle(f"{path.name} — rs-vlm")
        self.layers.set_scene_name(path.name)
        self.crs_label.setText(f"{frame.crs_text()} · {frame.width} × {frame.height} px")
        self._remember_recent(path)
        self._update_enabled()
        if self.settings.value("worker/start_early", True, type=bool):
            self.jobs.warm_up()
            if "ready" not in self.worker_label.text():
                self.worker_label.setText("worker: starting…")
        restored = self._restore_earlier_queries(path)
        text = f"Opened {path.name}. Type a question in the box above and press Enter."
        if restored:
            text += (f" {restored} earlier quer{'y' if restored == 1 else 'ies'} on this scene "
                     f"{'is' if restored == 1 else 'are'} in the layer list (hidden).")
        self.messages.show_message(text, "info")
        self.query.setFocus()
        return True

    def _restore_earlier_queries(self, scene: Path) -> int:
        """Queries answered on this scene before (localize.json in its results folder), hidden."""
        manifest = self.results_folder(scene) / "localize.json"
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8")).get("queries", [])
        except (OSError, ValueError, AttributeError):
            return 0
        count = 0
        for entry in entries:
            if not isinstance(entry, dict) or Path(str(entry.get("scene", ""))).resolve() != scene.resolve():
                continue
            query = str(entry.get("query", ""))
            heat, vectors = manifest.parent / str(entry.get("heatmap", "")), manifest.parent / str(entry.get("vectors", ""))
            if heat.is_file() and vectors.is_file() and query not in self.layers.groups():
                files = [protocol.ResultFile(str(heat), "heatmap", query),
                         protocol.ResultFile(str(vectors), "vectors", query, ["hotspots", "tiles"])]
                self.show_layer_plan(client.layer_plan("localize", files), visible=False)
                count += 1
        return count

    def add_heatmap_file(self, path: Path, group: str = "", visible: bool = True) -> HeatmapLayer | None:
        if self.map.frame is None:
            self.messages.show_message("Open the scene first, then add layers to it.", "warning")
            return None
        try:
            layer = HeatmapLayer(path, self.map.frame, group)
        except UserError as exc:
            self.messages.show_message(str(exc), "error")
            return None
        self.layers.add_layer(layer, visible)
        return layer

    def add_vector_file(self, path: Path, group: str = "", only: list[str] | None = None,
                        visible: dict[str, bool] | None = None) -> list[VectorLayer]:
        if self.map.frame is None:
            self.messages.show_message("Open the scene first, then add layers to it.", "warning")
            return []
        added = []
        try:
            names = gpkg_layers(path)
            for name in names:
                if only is not None and name not in only:
                    continue
                role = "hotspots" if name == "hotspots" else "tiles"
                show = (visible or {}).get(name, True)
                # a hidden layer is read when first shown: a big tile layer costs nothing until then
                layer = VectorLayer(path, name, self.map.frame, role, group or path.stem, lazy=not show)
                self.layers.add_layer(layer, show)
                added.append(layer)
        except UserError as exc:
            self.messages.show_message(str(exc), "error")
        return added

    def show_layer_plan(self, groups: list[client.LayerGroupPlan], visible: bool = True) -> list[Layer]:
        """Show the layers the client planned for a result (the same plan the QGIS plugin follows),
        bottom layer first; ``visible=False`` adds the groups hidden. A class raster is left out: the
        app draws classes from the tiles layer."""
        added: list[Layer] = []
        for group in groups:
            for planned in reversed(group.layers):
                if planned.role == "heatmap":
                    layer = self.add_heatmap_file(Path(planned.path), group.name, planned.visible and visible)
                    added += [layer] if layer is not None else []
                elif planned.source == "vector":
                    added += self.add_vector_file(Path(planned.path), group.name, only=[planned.sublayer],
                                                  visible={planned.sublayer: planned.visible and visible})
            if not visible:
                self.layers.set_group_visible(group.name, False)
        return added

    # -- asking ------------------------------------------------------------------------------------------

    def results_folder(self, scene: Path | None = None) -> Path:
        """Where answers about ``scene`` are written: the chosen results folder / scene name, else
        a folder beside the scene when writable, else Documents/rs-vlm/<scene name>."""
        scene = Path(scene or self.scene_path or "scene")
        chosen = self.settings.value("results/folder", "", type=str)
        if chosen:
            return Path(chosen) / scene.stem
        beside = scene.parent / f"{scene.stem}_rsvlm"
        if os.access(scene.parent, os.W_OK):
            return beside
        documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
        return Path(documents or Path.home()) / "rs-vlm" / scene.stem

    def ask(self, text: str | None = None) -> Job | None:
        """Send a query about the open scene to the persistent worker."""
        query = " ".join((text if isinstance(text, str) else self.query.text()).split())
        if not query:
            return None
        if self.scene_path is None:
            self.messages.show_message("Open a scene first (File › Open scene, or drop a raster on the map).",
                                       "warning")
            return None
        model = self.model_picker.model_spec()
        if model is None:
            self.messages.show_message("Choose a model in the toolbar (or a custom checkpoint).", "warning")
            return None
        spec = client.localize_spec(str(self.scene_path), [query], str(self.results_folder()), model,
                                    aoi=self.area.aoi)
        job = self.jobs.submit(spec, title=f"“{query}” on {self.scene_path.name}", interactive=True)
        self._query_jobs[job.id] = query
        self._remember_query(query)
        self.jobs_panel.select(job)
        self.query.selectAll()
        return job

    def search_archive(self, archive: Path, query: str, top_k: int = 20) -> Job | None:
        """The tiles of the archive folder ``archive`` best matching ``query`` (an archive-search job with
        the toolbar's model, which must be the archive's); the hits become a layer when it is done."""
        query = " ".join(str(query).split())
        if not query:
            self.messages.show_message("Type what to search the archive for.", "warning")
            return None
        archive = Path(archive)
        if not archive.is_dir():
            self.messages.show_message(f"{archive}: not a folder; choose an archive made by `rsvlm index`.",
                                       "error")
            return None
        model = self.model_picker.model_spec()
        if model is None:
            self.messages.show_message("Choose the archive's model in the toolbar (or a custom checkpoint).",
                                       "warning")
            return None
        slug = "".join(c if c.isalnum() else "_" for c in query)[:40].strip("_") or "query"
        out = self.results_folder(archive) / f"search_{slug}.gpkg"
        spec = client.archive_search_spec(str(archive), query, str(out), model, top_k=int(top_k))
        job = self.jobs.submit(spec, title=f"“{query}” in archive {archive.name}", interactive=True)
        self._remember_query(query)
        self.jobs_panel.select(job)
        self.messages.show_message(f"Searching {archive.name} for “{query}”…", "info")
        return job

    def _search_archive_dialog(self) -> None:
        dialog = ArchiveSearchDialog(self.settings, self, self.query.text().strip())
        if dialog.exec():
            values = dialog.values()
            if values["archive"] is None:
                self.messages.show_message("Choose the archive folder (made by `rsvlm index`).", "warning")
                return
            self.search_archive(values["archive"], values["query"], values["top_k"])

    def _show_archive_hits(self, job: Job) -> list[Layer]:
        """Show an archive search's hits; with no scene open, the best hit's scene is opened first
        (footprints of other scenes lie outside it: open their scenes to see them)."""
        plan = client.result_layer_plan(job)
        if not plan:
            return []
        if self.scene_path is None:
            scene = best_hit_scene(plan[0].layers[0].path, plan[0].layers[0].sublayer or "results")
            if scene is None or not self.open_scene(scene):
                return []
        for group in plan:
            self.layers.remove_group(group.name)  # the same search again replaces its layer
        added = self.show_layer_plan(plan)
        self.layers.select_group(plan[0].name)
        return added

    def caption_tiles(self, choice: ModelChoice, grid: str = "256", decoding: str = "beam",
                      clip_score: bool = False) -> Job | None:
        """Caption every tile of the open scene with the CoCa model ``choice``; the captions become a
        tiles layer when the job is done."""
        if not self._scene_for_tiles():
            return None
        device, precision = self.model_picker.device.currentData(), self.model_picker.precision.currentData()
        clip = None
        if clip_score:
            clip = self.model_picker.model_spec()
            if clip is None:
                self.messages.show_message("Choose a CLIP model in the toolbar to score the captions.", "warning")
                return None
        spec = client.caption_spec(str(self.scene_path),
                                   str(self.results_folder() / f"{self.scene_path.stem}_captions.gpkg"),
                                   choice.spec(device, precision), grid=grid, decoding=decoding, clip_model=clip,
                                   aoi=self.area.aoi)
        return self._submit_tile_job(spec, f"captions of {self.scene_path.name}")

    def classify_tiles(self, classes: str | list[str], grid: str = "256") -> Job | None:
        """Classify every tile of the open scene (a bundled class list or the given classes) with the
        toolbar's CLIP model; the classes become a tiles layer when the job is done."""
        if not self._scene_for_tiles():
            return None
        model = self.model_picker.model_spec()
        if model is None:
            self.messages.show_message("Choose a model in the toolbar (or a custom checkpoint).", "warning")
            return None
        name = classes if isinstance(classes, str) else "my_classes"
        spec = client.classify_spec(str(self.scene_path), classes, str(self.results_folder() / f"classes_{name}"),
                                    model, grid=grid, aoi=self.area.aoi)
        return self._submit_tile_job(spec, f"classes ({name}) of {self.scene_path.name}")

    def _scene_for_tiles(self) -> bool:
        if self.scene_path is None:
            self.messages.show_message("Open a scene first (File › Open scene, or drop a raster on the map).",
                                       "warning")
            return False
        return True

    def _submit_tile_job(self, spec: dict[str, Any], title: str) -> Job:
        job = self.jobs.submit(spec, title=title, interactive=True)  # the persistent worker: models stay loaded
        self.jobs_panel.select(job)
        self.messages.show_message(f"{title}: started; the tiles appear as a layer when it is done.", "info")
        return job

    def _caption_dialog(self) -> None:
        dialog = CaptionDialog(self.settings, self)
        if dialog.exec():
            values = dialog.values()
            self.caption_tiles(values["choice"], values["grid"], values["decoding"], values["clip_score"])

    def _classify_dialog(self) -> None:
        dialog = ClassifyDialog(self.settings, self)
        if dialog.exec():
            values = dialog.values()
            self.classify_tiles(values["classes"], values["grid"])

    def _load_tiles(self, job: Job) -> list[Layer]:
        """Show a job's tiles layers (captions, classes, search hits) when its scene is the open one."""
        if job.result is None or self.scene_path is None:
            return []
        scene = Path(str(job.spec.get("scene", "")))
        if scene.resolve() != self.scene_path.resolve():
            return []
        added: list[Layer] = []
        for group in client.result_layer_plan(job):
            self.layers.remove_group(group.name)  # a job run again replaces its layer
            added += self.show_layer_plan([group])
            self.layers.select_group(group.name)
        return added

    def _remember_query(self, query: str) -> None:
        history = [query] + [q for q in (self.settings.value("queries/history", [], type=list) or []) if q != query]
        self.settings.setValue("queries/history", history[:50])
        self._completer.model().setStringList(history[:50])

    def _job_finished(self, job: Job) -> None:
        query = self._query_jobs.pop(job.id, None)
        if job.state == DONE:
            if job.kind == "localize" and job.result is not None:
                loaded = self._load_result(job)
                if query is not None and loaded:
                    spots = next((q.get("hotspots") for q in job.result.summary.get("queries", [])
                                  if q.get("query") == query), None)
                    self.messages.show_message(
                        f"“{query}”: {spots if spots is not None else 'no'} hot spot(s). "
                        f"Files: {Path(job.result.summary.get('out', '')).as_posix()}", "success")
            elif job.kind == "archive-search" and job.result is not None and self._show_archive_hits(job):
                summary = job.result.summary
                self.messages.show_message(
                    f"{job.title}: the best {len(summary.get('hits') or [])} tile(s) of "
                    f"{summary.get('scenes_searched', '?')} scene(s), shown on {self.scene_path.name}; "
                    f"all footprints: {summary.get('out', '')}", "success")
            elif job.kind in ("caption", "classify") and self._load_tiles(job):
                self.messages.show_message(f"{job.title}: {job.result.summary.get('tiles', '?')} tiles, shown as "
                                           "a layer; hover a tile to read it.", "success")
            else:
                self.messages.show_message(f"{job.title}: done. Open its result from the Jobs panel.", "success")
        elif job.state == FAILED:
            hint = ""
            if job.error_kind == "model":
                hint = " Choose another model (or fix the checkpoint) in the toolbar and ask again."
            elif job.error_kind == "worker":
                hint = " A new worker starts with the next query."
            self.messages.show_message(f"{job.title} failed: {job.error}.{hint}".replace("..", "."), "error")
        elif job.state == CANCELLED:
            self.messages.show_message(f"{job.title}: cancelled. Finished work is kept; asking again resumes it.",
                                       "info")

    def _load_result(self, job: Job) -> bool:
        """Show a localize job's heat maps and hot spots (if its scene is the open one)."""
        result = job.result
        if result is None or self.scene_path is None:
            return False
        scene = Path(str(job.spec.get("scene", "")))
        if scene.resolve() != self.scene_path.resolve():
            return False
        plan = client.result_layer_plan(job)
        for group in plan:
            query = group.name
            for other in self.layers.groups():
                if other != query:
                    self.layers.set_group_visible(other, False)  # the newest answer on top, alone
            heat = next(Path(p.path) for p in group.layers if p.role == "heatmap")
            shown = [x for x in self.layers.layers_in(query) if isinstance(x, HeatmapLayer)]
            if shown and all(x.path == heat and x.path.stat().st_mtime <= x.loaded_at for x in shown):
                self.layers.set_group_visible(query, True)  # already on the map, unchanged since
            else:
                self.show_layer_plan([group])
            self.layers.select_group(query)
        return bool(plan)

    def open_job_result(self, job: Job) -> None:
        """"Open result": show its layers on the map (opening its scene if needed), or its folder."""
        if job.result is None:
            return
        if job.kind == "localize":
            scene = Path(str(job.spec.get("scene", "")))
            if (self.scene_path is None or scene.resolve() != self.scene_path.resolve()) and not self.open_scene(scene):
                return
            self._load_result(job)
            return
        if job.kind == "archive-search" and self._show_archive_hits(job):
            return
        plan = client.result_layer_plan(job)
        if plan and self.scene_path is not None:
            self.show_layer_plan(plan)
            return
        first = next(iter(job.result.files), None)
        if first is not None:
            folder = Path(first.path) if first.role == "folder" else Path(first.path).parent
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _worker_ready(self, hello) -> None:
        device = hello.device.get("default", "?")
        if device == "none":
            self.worker_label.setText("worker: cannot compute")
            self.messages.show_message(f"The worker cannot compute: {hello.device.get('error', 'torch is missing')}. "
                                       "Check the rs-vlm installation.", "error")
            return
        names = hello.device.get("cuda") or []
        detail = f"{device}" + (f" ({names[0]})" if names and device == "cuda" else "")
        self.worker_label.setText(f"worker ready · {detail} · torch {hello.versions.get('torch', '?')}")

    # -- map interaction ------------------------------------------------------------------------------------

    def _hover(self, x: float, y: float) -> None:
        frame = self.map.frame
        if frame is None:
            self.coords.setText("")
            return
        if 0 <= x < frame.width and 0 <= y < frame.height:
            mx, my = frame.to_map(x, y)
            if frame.crs is not None and getattr(frame.crs, "is_geographic", False):
                where = f"lon {mx:.6f}  lat {my:.6f}"
            else:
                where = f"x {mx:,.2f}  y {my:,.2f}" + ("" if frame.georeferenced else " (pixels)")
            self.coords.setText(f"{where}   ·   column {int(x)}  row {int(y)}")
        else:
            self.coords.setText("")
        self._identify(x, y, pinned=False)

    def _click(self, x: float, y: float) -> None:
        self._identify(x, y, pinned=True)

    def identify(self, x: float, y: float) -> list[tuple[VectorLayer, dict[str, Any]]]:
        """Features of the visible vector layers under scene pixel (x, y): newest layer first, then
        the finest tile first (at most 3 per layer)."""
        hits = []
        for layer in reversed(self.layers.layers):
            if isinstance(layer, VectorLayer) and layer.visible:
                hits += [(layer, record) for record in layer.features_at(x, y)[:3]]
        return hits

    def _identify(self, x: float, y: float, pinned: bool) -> None:
        hits_with_layers = self.identify(x, y)
        if not hits_with_layers:
            if pinned:
                self.info.pinned = False
            self.info.show_features([], None, pinned=pinned)
            self._clear_highlight()
            return
        where = None
        if self.map.frame is not None:
            mx, my = self.map.frame.to_map(x, y)
            where = f"x {mx:,.2f}, y {my:,.2f}"
        self.info.show_features([(f"{layer.group} · {layer.name}", r) for layer, r in hits_with_layers],
                                where, pinned=pinned)
        if pinned or not self.info.pinned:
            layer, record = hits_with_layers[0]
            self._set_highlight(layer.geometry_of(record))

    def _set_highlight(self, geometry) -> None:
        if self._highlight is not None and getattr(self._highlight, "geometry", None) is geometry:
            return
        self._clear_highlight()
        if geometry is None:
            return
        item = QGraphicsPathItem(painter_path(geometry))
        pen = QPen(QColor("#ffd400"), 2.5)
        pen.setCosmetic(True)
        item.setPen(pen)
        item.setZValue(Z_HIGHLIGHT)
        item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        item.geometry = geometry
        self.map.scene().addItem(item)
        self._highlight = item

    def _clear_highlight(self) -> None:
        if self._highlight is not None:
            if self._highlight.scene() is not None:
                self.map.scene().removeItem(self._highlight)
            self._highlight = None

    def _zoom_to(self, rect) -> None:
        if rect is None or rect.isEmpty():
            self.map.zoom_full()
        else:
            pad = max(rect.width(), rect.height()) * 0.1
            self.map.zoom_to(rect.adjusted(-pad, -pad, pad, pad))

    # -- dialogs -------------------------------------------------------------------------------------------------

    def _open_dialog(self) -> None:
        start = str(self.scene_path.parent) if self.scene_path else self.settings.value("paths/last", "", type=str)
        path, _ = QFileDialog.getOpenFileName(self, "Open scene", start, RASTER_FILTER)
        if path:
            self.settings.setValue("paths/last", str(Path(path).parent))
            self.open_scene(Path(path))

    def _add_layer_dialog(self) -> None:
        start = str(self.results_folder()) if self.scene_path else ""
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Add layer", start, "Layers (*.tif *.tiff *.gpkg);;Heat maps (*.tif *.tiff);;GeoPackages (*.gpkg)")
        for path in paths:
            if path.lower().endswith(VECTOR_SUFFIXES):
                self.add_vector_file(Path(path))
            else:
                self.add_heatmap_file(Path(path))

    def _run_spec_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Run job spec", "", "Job specs (*.json);;All files (*)")
        if path:
            self.run_spec_file(Path(path))

    def run_spec_file(self, path: Path) -> Job | None:
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self.messages.show_message(f"{path}: not a job spec ({exc})", "error")
            return None
        if not isinstance(spec, dict):
            self.messages.show_message(f"{path}: a job spec is a JSON object with a \"kind\"", "error")
            return None
        return self.jobs.submit(spec, title=f"{spec.get('kind', 'job')} ({Path(path).name})", interactive=False)

    def _results_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Results folder", str(self.results_folder().parent))
        if folder:
            self.settings.setValue("results/folder", folder)
            self.messages.show_message(f"Answers are now written under {folder}", "info")

    def _export_group_dialog(self, group: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, f"Export “{group}” to", str(self.results_folder()))
        if not folder:
            return
        try:
            copies = self.layers.export_group(group, Path(folder))
        except UserError as exc:
            self.messages.show_message(str(exc), "error")
            return
        self.messages.show_message(f"Exported {len(copies)} file(s) of “{group}” to {folder}", "success")

    def _export_view_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export map view", str(self.results_folder() / "view.png"),
                                              "PNG (*.png)")
        if path:
            if self.map.viewport().grab().save(path):
                self.messages.show_message(f"Saved {path}", "success")
            else:
                self.messages.show_message(f"{path}: cannot write this file", "error")

    # -- recent files -----------------------------------------------------------------------------------------

    def recent_files(self) -> list[str]:
        return [str(p) for p in (self.settings.value("recent/scenes", [], type=list) or [])]

    def _remember_recent(self, path: Path) -> None:
        name = str(path.resolve())
        recent = [name] + [p for p in self.recent_files() if p != name]
        self.settings.setValue("recent/scenes", recent[:MAX_RECENT])
        self._fill_recent()

    def _forget_recent(self, path: Path) -> None:
        name = str(path.resolve())
        self.settings.setValue("recent/scenes", [p for p in self.recent_files() if p != name])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        for name in recent:
            action = self.recent_menu.addAction(Path(name).name)
            action.setToolTip(name)
            action.setStatusTip(name)
            action.triggered.connect(lambda _checked=False, n=name: self.open_scene(Path(n)))
        self.recent_menu.setEnabled(bool(recent))

    # -- drag and drop on the window, closing ----------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    def closeEvent(self, event) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.sync()
        self.jobs.shutdown()
        self.map.close_scene()
        super().closeEvent(event)

    def layer_list(self) -> list[Layer]:
        return list(self.layers.layers)


def _is_heatmap(path: Path) -> bool:
    """One of our heat maps: a one-band float GeoTIFF with a "query" tag."""
    try:
        import rasterio

        with rasterio.open(path) as ds:
            return ds.count == 1 and ds.dtypes[0].startswith("float") and "query" in ds.tags()
    except Exception:
        return False
