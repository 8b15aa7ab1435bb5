"""The form of a dataset build: sources, backends, relay / perspectives / integration, caption plan,
quality checks. It edits the plain data of the YAML file ``rsvlm dataset build`` reads (one format):
a loaded file's settings the form does not show (timeouts, class names, extra request fields, ...)
are kept as they are, and :meth:`DatasetForm.config_dict` is what Save writes and Start runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from rs_vlm_app.gui.background import problem_text, run_in_background

ACTIONS = ("drop", "flag", "off")
SOURCE_PATHS = {"folder": ("root",), "coco": ("annotations", "images"), "dota": ("labels", "images")}
COUNT_CAP = 1_000_000
DEFAULT_CONFIG: dict[str, Any] = {
    "output": "",
    "sources": [],
    "backends": {"server": {"type": "openai", "base_url": "http://127.0.0.1:8000/v1",
                            "model": "Qwen/Qwen2.5-VL-7B-Instruct", "concurrency": 4}},
    "relay": {"backend": "server"},
    "perspectives": {"backend": "server", "prompts": ["scene", "objects", "spatial"]},
    "integration": {"backend": "server"},
}


def source_object(data: dict[str, Any]):
    """The checked mpgi source of a source's plain data (the config file's own rules), e.g. to count
    its images; a mistake is a UserError."""
    return _parsed(sources=[data]).sources[0]


def parse_backend(name: str, data: dict[str, Any]):
    """The checked mpgi backend of a backend's plain data (the config file's own rules)."""
    return _parsed(backends={name: data}).backends[name]


def _parsed(sources: list | None = None, backends: dict | None = None):
    """A one-part configuration through BuildConfig's parser (the other parts are placeholders)."""
    from rs_vlm_app.mpgi.config import BuildConfig

    backends = backends or {"b": {"type": "openai", "base_url": "http://127.0.0.1/v1", "model": "m"}}
    name = next(iter(backends))
    return BuildConfig.from_dict({"output": ".", "sources": sources or [{"type": "folder", "root": "."}],
                                  "backends": backends, "relay": {"backend": name}, "perspectives": None,
                                  "integration": {"backend": name}}, origin="the form")


def source_label(data: dict[str, Any]) -> str:
    paths = [str(data.get(k, "")) for k in SOURCE_PATHS.get(data.get("type", "folder"), ())]
    return "  +  ".join(paths)


def _perspective_ref(item: Any) -> tuple[str, str | None]:
    """(prompt reference, its own backend or None) of one perspectives.prompts item."""
    if isinstance(item, dict):
        return str(item.get("prompt", "")), item.get("backend")
    return str(item), None


class DatasetForm(QWidget):
    """Every choice of a build, filled from and turned back into the YAML's plain data."""

    changed = pyqtSignal()
    problem = pyqtSignal(str)   # a one-line problem found while filling the form (a source, a test)
    tested = pyqtSignal(str)    # the answer of a backend's start-up check

    def __init__(self, parent=None):
        super().__init__(parent)
        self._base: dict[str, Any] = copy.deepcopy(DEFAULT_CONFIG)
        self.counts: dict[int, int | None] = {}   # source key -> images found (None: counting)
        self._source_data: dict[int, dict[str, Any]] = {}  # source key -> its plain data
        outer = QVBoxLayout(self)

        top = QFormLayout()
        self.output = QLineEdit()
        self.output.setPlaceholderText("the dataset folder (manifest.sqlite, export/)")
        top.addRow("Dataset folder", _with_button(self.output, "Browse…", self._browse_output))
        outer.addLayout(top)

        # sources
        box = QGroupBox("Sources")
        column = QVBoxLayout(box)
        self.sources = _table(["Type", "Where", "Images found"], stretch=1)
        column.addWidget(self.sources)
        row = QHBoxLayout()
        for label, kind in (("Add folder…", "folder"), ("Add COCO…", "coco"), ("Add DOTA / DIOR…", "dota")):
            button = QPushButton(label)
            button.clicked.connect(lambda _c=False, k=kind: self._add_source_dialog(k))
            row.addWidget(button)
        self.remove_source_button = QPushButton("Remove")
        self.remove_source_button.clicked.connect(self._remove_source)
        row.addWidget(self.remove_source_button)
        row.addStretch(1)
        column.addLayout(row)
        outer.addWidget(box)

        # backends
        box = QGroupBox("Backends (OpenAI-compatible endpoints: vLLM, Ollama, llama.cpp, transformers serve)")
        column = QVBoxLayout(box)
        self.backends = _table(["Name", "Base URL", "Model", "API-key variable", "Concurrency"], stretch=1)
        self.backends.itemChanged.connect(lambda _i: self._backends_changed())
        column.addWidget(self.backends)
        row = QHBoxLayout()
        add = QPushButton("Add")
        add.clicked.connect(lambda: self.add_backend(self._free_name(), {"type": "openai", "base_url": "http://127.0.0.1:8000/v1",
                                                                          "model": "", "concurrency": 4}))
        remove = QPushButton("Remove")
        remove.clicked.connect(self._remove_backend)
        self.test_button = QPushButton("Test")
        self.test_button.setToolTip("Send the start-up check the build sends to the selected backend")
        self.test_button.clicked.connect(lambda: self.test_backend())
        self.test_answer = QLabel()
        self.test_answer.setWordWrap(True)
        for widget in (add, remove, self.test_button):
            row.addWidget(widget)
        row.addWidget(self.test_answer, 1)
        column.addLayout(row)
        outer.addWidget(box)

        # stages
        box = QGroupBox("Relay, perspectives, integration")
        form = QFormLayout(box)
        self.relay = QComboBox()
        self.relay_chain = QLineEdit()
        self.relay_chain.setPlaceholderText("optional: more backends that improve the description in turn, e.g. b, c")
        form.addRow("Relay backend", self.relay)
        form.addRow("Relayed on through", self.relay_chain)
        self.prompts_dir = QLineEdit()
        self.prompts_dir.setPlaceholderText("shipped prompts (or a folder of your own: relay.yaml, perspectives/…)")
        self.prompts_dir.editingFinished.connect(self._fill_perspectives)
        form.addRow("Prompt folder", _with_button(self.prompts_dir, "Browse…", self._browse_prompts))
        self.perspective_backend = QComboBox()
        form.addRow("Perspectives backend", self.perspective_backend)
        self.perspectives = _table(["Perspective", "Description", "Backend"], stretch=1)
        self.perspectives.setMinimumHeight(140)
        form.addRow("Perspectives", self.perspectives)
        self.integration = QComboBox()
        form.addRow("Integration backend", self.integration)
        outer.addWidget(box)

        # captions
        box = QGroupBox("Caption plan (final captions per image)")
        column = QVBoxLayout(box)
        self.captions = _table(["Length name", "Words", "Count"], stretch=0)
        self.captions.setMinimumHeight(110)
        column.addWidget(self.captions)
        row = QHBoxLayout()
        add = QPushButton("Add length")
        add.clicked.connect(lambda: self._add_caption({"name": f"length{self.captions.rowCount() + 1}", "words": 25,
                                                       "count": 1}))
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: self.captions.removeRow(max(0, self.captions.currentRow())))
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        column.addLayout(row)
        outer.addWidget(box)

        # quality
        box = QGroupBox("Quality checks")
        form = QFormLayout(box)
        self.quality: dict[str, QComboBox] = {}
        for key, label in (("contradictions", "Contradicts the annotations"), ("duplicates", "Duplicates"),
                           ("length", "Length outside the range")):
            combo = QComboBox()
            combo.addItems(ACTIONS)
            self.quality[key] = combo
            form.addRow(label, combo)
        self.near_duplicate = QDoubleSpinBox()
        self.near_duplicate.setRange(0.05, 1.0)
        self.near_duplicate.setSingleStep(0.05)
        form.addRow("Near-duplicate word overlap", self.near_duplicate)
        self.clip_on = QCheckBox("Score captions against their image with a CLIP model")
        self.clip_model = QComboBox()
        self.clip_model.setEditable(True)
        from rs_vlm_app.gui.model_picker import catalogue_models

        for name, _description, _default in catalogue_models("clip"):
            self.clip_model.addItem(name)
        self.clip_min = QDoubleSpinBox()
        self.clip_min.setRange(-1.0, 1.0)
        self.clip_min.setSingleStep(0.01)
        self.clip_action = QComboBox()
        self.clip_action.addItems(ACTIONS[:2])
        form.addRow(self.clip_on)
        clip_row = QWidget()
        line = QHBoxLayout(clip_row)
        line.setContentsMargins(0, 0, 0, 0)
        for widget in (QLabel("model"), self.clip_model, QLabel("min score"), self.clip_min, self.clip_action):
            line.addWidget(widget)
        form.addRow("", clip_row)
        outer.addWidget(box)
        outer.addStretch(1)
        self.load_dict(DEFAULT_CONFIG)

    # -- filling ------------------------------------------------------------------------------------
    def load_dict(self, data: dict[str, Any]) -> None:
        """Show a configuration's plain data (``BuildConfig.to_dict()`` of a checked file, or defaults)."""
        self._base = copy.deepcopy(data)
        self.output.setText(str(data.get("output") or ""))
        self.sources.setRowCount(0)
        for source in data.get("sources") or []:
            self.add_source(dict(source))
        self.backends.blockSignals(True)
        self.backends.setRowCount(0)
        for name, backend in (data.get("backends") or {}).items():
            self.add_backend(name, dict(backend))
        self.backends.blockSignals(False)
        relay = data.get("relay") or {}
        chain = list(relay.get("chain") or [])
        first = chain[0] if chain else relay.get("backend")
        self.relay_chain.setText(", ".join(chain[1:]))
        perspectives = data.get("perspectives")
        if isinstance(perspectives, list):
            perspectives = {"prompts": perspectives}
        perspectives = perspectives or {"prompts": []}
        self.prompts_dir.setText(str(data.get("prompts_dir") or ""))
        self._chosen = {ref: backend for ref, backend in map(_perspective_ref, perspectives.get("prompts") or [])}
        self.perspectives.setRowCount(0)  # filled from _chosen by _backends_changed
        integration = data.get("integration") or {}
        self._backends_changed(relay=first, perspectives=perspectives.get("backend"),
                               integration=integration.get("backend"))
        self.set_caption_plan(integration.get("captions") or [{"name": "short", "words": 15, "count": 2},
                                                             {"name": "medium", "words": 35, "count": 2},
                                                             {"name": "detailed", "words": 70, "count": 2}])
        quality = data.get("quality") or {}
        for key, combo in self.quality.items():
            combo.setCurrentText(str(quality.get(key, "flag" if key == "length" else "drop")))
        self.near_duplicate.setValue(float(quality.get("near_duplicate", 0.9)))
        clip = quality.get("clip")
        self.clip_on.setChecked(bool(clip))
        clip = clip or {}
        if clip.get("name"):
            self.clip_model.setCurrentText(str(clip["name"]))
        self.clip_min.setValue(float(clip.get("min_score", 0.2)))
        self.clip_action.setCurrentText(str(clip.get("action", "drop")))

    def add_source(self, data: dict[str, Any]) -> None:
        """Add a source (plain data) and count its images in the background."""
        row = self.sources.rowCount()
        self.sources.insertRow(row)
        kind = data.get("type", "folder")
        key = len(self._source_data) + 1
        self._source_data[key] = data
        item = QTableWidgetItem(kind)
        item.setData(Qt.ItemDataRole.UserRole, key)
        self.sources.setItem(row, 0, item)
        self.sources.setItem(row, 1, QTableWidgetItem(source_label(data)))
        self.sources.setItem(row, 2, QTableWidgetItem("counting…"))
        for column in range(3):
            self.sources.item(row, column).setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
        self.counts[key] = None

        def count():
            from rs_vlm_app.mpgi.browse import count_images

            return count_images(source_object(data), cap=COUNT_CAP)

        run_in_background(count, lambda result: self._counted(key, result),
                          lambda exc: self._counted(key, None, problem_text(exc)))
        self.changed.emit()

    def _counted(self, key: int, result: tuple[int, int] | None, problem: str = "") -> None:
        row = self._source_row(key)
        if row is None:
            return
        data = self._source_data[key]
        images = result[0] if result else 0
        self.counts[key] = images
        if problem:
            text = problem
        elif images == 0:
            text = "no images found"
        else:
            text = f"{images:,}{'+' if images >= COUNT_CAP else ''} image{'s' * (images != 1)}"
            if result and result[1]:
                text += f" ({result[1]} input problem{'s' * (result[1] != 1)})"
        item = self.sources.item(row, 2)
        item.setText(text)
        item.setForeground(QColor("#9b1c1c") if problem or images == 0 else QColor("#1b5e20"))
        item.setToolTip(text)
        if problem or images == 0:
            self.problem.emit(f"{source_label(data)}: {problem or 'no images found in this source'}")

    def _source_row(self, key: int) -> int | None:
        for row in range(self.sources.rowCount()):
            if self.sources.item(row, 0).data(Qt.ItemDataRole.UserRole) == key:
                return row
        return None

    def _source_keys(self) -> list[int]:
        return [self.sources.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(self.sources.rowCount())]

    def source_dicts(self) -> list[dict[str, Any]]:
        return [self._source_data[k] for k in self._source_keys()]

    def source_counts(self) -> list[tuple[dict[str, Any], int | None]]:
        """Each source with the images found (None while still counting)."""
        return [(self._source_data[k], self.counts.get(k)) for k in self._source_keys()]

    def add_backend(self, name: str, data: dict[str, Any]) -> None:
        row = self.backends.rowCount()
        self.backends.insertRow(row)
        local = data.get("type") == "transformers"
        values = [name, str(data.get("model") if local else data.get("base_url", "")),
                  "(local model)" if local else str(data.get("model", "")), str(data.get("api_key_env") or ""),
                  str(data.get("batch_size" if local else "concurrency", 4))]
        for column, value in enumerate(values):
            item = QTableWidgetItem(value)
            if column == 0:
                item.setData(Qt.ItemDataRole.UserRole, data)
            if local and column in (2, 3):
                item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
            self.backends.setItem(row, column, item)
        self._backends_changed()

    def backend_dicts(self) -> dict[str, dict[str, Any]]:
        """Name -> plain data of every backend row (settings the table does not show are kept)."""
        out: dict[str, dict[str, Any]] = {}
        for row in range(self.backends.rowCount()):
            cells = [self.backends.item(row, c).text().strip() if self.backends.item(row, c) else "" for c in range(5)]
            base = dict(self.backends.item(row, 0).data(Qt.ItemDataRole.UserRole) or {"type": "openai"})
            number = int(cells[4]) if cells[4].isdigit() else cells[4]
            if base.get("type") == "transformers":
                base.update(model=cells[1], batch_size=number)
            else:
                base.update(type="openai", base_url=cells[1], model=cells[2], concurrency=number)
                if cells[3]:
                    base["api_key_env"] = cells[3]
                else:
                    base.pop("api_key_env", None)
            out[cells[0]] = base
        return out

    def _free_name(self) -> str:
        names = set(self.backend_dicts())
        return next(f"backend{i}" for i in range(1, 1000) if f"backend{i}" not in names)

    def _remove_backend(self) -> None:
        if self.backends.currentRow() >= 0:
            self.backends.removeRow(self.backends.currentRow())
            self._backends_changed()

    def _backends_changed(self, relay: str | None = None, perspectives: str | None = None,
                          integration: str | None = None) -> None:
        names = list(self.backend_dicts())
        for combo, wanted in ((self.relay, relay), (self.perspective_backend, perspectives),
                              (self.integration, integration)):
            current = wanted or combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            if combo is self.perspective_backend:
                combo.addItem("(the relay's)", "")
            for name in names:
                combo.addItem(name, name)
            index = combo.findData(current) if current else -1
            combo.setCurrentIndex(index if index >= 0 else (0 if combo.count() else -1))
            combo.blockSignals(False)
        if hasattr(self, "_chosen"):
            self._fill_perspectives()

    # -- perspectives ---------------------------------------------------------------------------------------------
    def _fill_perspectives(self) -> None:
        """List the prompt folder's perspectives (and the shipped ones), ticked when chosen."""
        from rs_vlm_app.mpgi.prompts import list_prompts

        chosen = self._chosen if not self.perspectives.rowCount() else self.perspective_choices()
        folder = Path(self.prompts_dir.text().strip()).expanduser() if self.prompts_dir.text().strip() else None
        rows: list[tuple[str, str, str]] = []  # (reference, shown name, description)
        if folder is not None:
            rows += [(name, name, f"{description} (your prompts)") for name, description, _ in
                     list_prompts("perspective", folder)]
        for name, description, path in list_prompts("perspective"):
            ref = str(path) if folder is not None else name
            rows.append((ref, name, description + (" (shipped)" if folder is not None else "")))
        known = {r[0] for r in rows}
        rows += [(ref, Path(ref).stem, "(a prompt file)") for ref in chosen if ref not in known]
        order = list(chosen)  # the chosen ones first, in their order (the order of the stages)
        rows.sort(key=lambda r: order.index(r[0]) if r[0] in chosen else len(order))
        names = [self.perspective_backend.itemText(i) for i in range(self.perspective_backend.count())]
        self.perspectives.setRowCount(0)
        for ref, name, description in rows:
            row = self.perspectives.rowCount()
            self.perspectives.insertRow(row)
            item = QTableWidgetItem(name)
            item.setData(Qt.ItemDataRole.UserRole, ref)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            item.setCheckState(Qt.CheckState.Checked if ref in chosen else Qt.CheckState.Unchecked)
            item.setToolTip(ref)
            self.perspectives.setItem(row, 0, item)
            text = QTableWidgetItem(description)
            text.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.perspectives.setItem(row, 1, text)
            combo = QComboBox()
            combo.addItem("(stage's)", "")
            for backend in names[1:]:
                combo.addItem(backend, backend)
            combo.setCurrentIndex(max(0, combo.findData(chosen.get(ref) or "")))
            self.perspectives.setCellWidget(row, 2, combo)

    def perspective_choices(self) -> dict[str, str | None]:
        """Ticked perspective references -> their own backend (None: the stage's)."""
        out: dict[str, str | None] = {}
        for row in range(self.perspectives.rowCount()):
            item = self.perspectives.item(row, 0)
            if item.checkState() == Qt.CheckState.Checked:
                combo = self.perspectives.cellWidget(row, 2)
                out[item.data(Qt.ItemDataRole.UserRole)] = (combo.currentData() or None) if combo else None
        return out

    def set_perspectives(self, choices: dict[str, str | None]) -> None:
        self._chosen = dict(choices)
        self.perspectives.setRowCount(0)
        self._fill_perspectives()

    # -- captions ------------------------------------------------------------------------------------------------
    def _add_caption(self, slot: dict[str, Any]) -> None:
        row = self.captions.rowCount()
        self.captions.insertRow(row)
        self.captions.setItem(row, 0, QTableWidgetItem(str(slot.get("name", ""))))
        for column, key, default in ((1, "words", 15), (2, "count", 1)):
            spin = QSpinBox()
            spin.setRange(1, 1000 if key == "words" else 20)
            spin.setValue(int(slot.get(key, default)))
            self.captions.setCellWidget(row, column, spin)

    def set_caption_plan(self, slots: list[dict[str, Any]]) -> None:
        """Replace the caption lengths: [{name, words, count}, ...]."""
        self.captions.setRowCount(0)
        for slot in slots:
            self._add_caption(slot)

    def caption_slots(self) -> list[dict[str, Any]]:
        return [{"name": self.captions.item(r, 0).text().strip(), "words": self.captions.cellWidget(r, 1).value(),
                 "count": self.captions.cellWidget(r, 2).value()} for r in range(self.captions.rowCount())]

    # -- the configuration -----------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The YAML's plain data: the loaded file's settings with the form's choices over them."""
        data = copy.deepcopy(self._base)
        data["output"] = self.output.text().strip()
        data["sources"] = [dict(d) for d in self.source_dicts()]
        data["backends"] = self.backend_dicts()
        relay = dict(data.get("relay") or {})
        chain = [n.strip() for n in self.relay_chain.text().replace(";", ",").split(",") if n.strip()]
        relay.pop("backend", None)
        relay.pop("chain", None)
        if chain:
            relay["chain"] = [self.relay.currentText(), *chain]
        else:
            relay["backend"] = self.relay.currentText()
        data["relay"] = relay
        perspectives = data.get("perspectives")
        perspectives = dict(perspectives) if isinstance(perspectives, dict) else {}
        stage_backend = self.perspective_backend.currentData()
        perspectives.pop("backend", None)
        if stage_backend:
            perspectives["backend"] = stage_backend
        old = {ref: item for ref, item in ((_perspective_ref(i)[0], i) for i in perspectives.get("prompts") or [])}
        items: list[Any] = []
        for ref, backend in self.perspective_choices().items():
            item = old.get(ref)
            item = {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else {"prompt": ref}
            item.pop("backend", None)
            if backend:
                item["backend"] = backend
            items.append(item["prompt"] if set(item) == {"prompt"} else item)
        perspectives["prompts"] = items
        data["perspectives"] = perspectives
        integration = dict(data.get("integration") or {})
        integration["backend"] = self.integration.currentText()
        integration["captions"] = self.caption_slots()
        data["integration"] = integration
        quality = dict(data.get("quality") or {})
        for key, combo in self.quality.items():
            quality[key] = combo.currentText()
        quality["near_duplicate"] = round(self.near_duplicate.value(), 3)
        if self.clip_on.isChecked():
            clip = dict(quality.get("clip") or {})
            clip.update(name=self.clip_model.currentText().strip(), min_score=round(self.clip_min.value(), 3),
                        action=self.clip_action.currentText())
            quality["clip"] = clip
        else:
            quality["clip"] = None
        data["quality"] = quality
        folder = self.prompts_dir.text().strip()
        data["prompts_dir"] = folder or None
        return data

    # -- dialogs -------------------------------------------------------------------------------------------------
    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.output.text())
        if folder:
            self.output.setText(folder)

    def _browse_prompts(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Prompt folder", self.prompts_dir.text())
        if folder:
            self.prompts_dir.setText(folder)
            self._fill_perspectives()

    def _add_source_dialog(self, kind: str) -> None:
        if kind == "folder":
            root = QFileDialog.getExistingDirectory(self, "Image folder (class folders inside)")
            if root:
                self.add_source({"type": "folder", "root": root})
            return
        if kind == "coco":
            first, _ = QFileDialog.getOpenFileName(self, "COCO annotations", "", "COCO JSON (*.json);;All files (*)")
        else:
            first = QFileDialog.getExistingDirectory(self, "Label folder (one .txt per image)")
        if not first:
            return
        images = QFileDialog.getExistingDirectory(self, "Image folder", str(Path(first).parent))
        if images:
            key = "annotations" if kind == "coco" else "labels"
            self.add_source({"type": kind, key: first, "images": images})

    def _remove_source(self) -> None:
        row = self.sources.currentRow()
        if row >= 0:
            self.sources.removeRow(row)
            self.changed.emit()

    # -- the start-up check -----------------------------------------------------------------------------------
    def test_backend(self, name: str | None = None) -> None:
        """Run the selected backend's start-up check in the background; the answer shows beside "Test"."""
        backends = self.backend_dicts()
        if name is None:
            row = max(0, self.backends.currentRow())
            name = self.backends.item(row, 0).text().strip() if self.backends.rowCount() else ""
        if name not in backends:
            self.test_answer.setText("Add a backend first.")
            return
        try:
            backend = parse_backend(name, backends[name])
        except Exception as exc:
            self._tested(problem_text(exc), ok=False)
            return
        self.test_answer.setText(f"{name}: asking…")
        self.test_button.setEnabled(False)

        def probe():
            from rs_vlm_app.mpgi.backends.probe import probe_backend

            return probe_backend(name, backend)

        run_in_background(probe, lambda answer: self._tested(answer.text(), ok=True),
                          lambda exc: self._tested(problem_text(exc), ok=False))

    def _tested(self, text: str, ok: bool) -> None:
        self.test_button.setEnabled(True)
        self.test_answer.setText(text)
        self.test_answer.setStyleSheet(f"color: {'#1b5e20' if ok else '#9b1c1c'}")
        self.tested.emit(text)
        if not ok:
            self.problem.emit(text)


def _table(headers: list[str], stretch: int) -> QTableWidget:
    """A one-selection table whose column ``stretch`` takes the room the others leave."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
    header = table.horizontalHeader()
    header.setStretchLastSection(False)
    for column in range(len(headers)):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch if column == stretch
                                    else QHeaderView.ResizeMode.ResizeToContents)
    table.setMinimumHeight(90)
    return table


def _with_button(edit: QLineEdit, label: str, slot) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton(label)
    button.clicked.connect(slot)
    row.addWidget(button)
    return box
