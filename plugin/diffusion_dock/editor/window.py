"""The standalone editor's main window: canvas in the middle, tool bar, menus, and on the right the
dock area: the Diffusion Dock (``DockPanel``) above the layer list.

Windows share one ``DockSession`` (one engine, one results history).  A result that does not fit the
canvas (upscale ×4) opens in a new window holding a new document."""

from __future__ import annotations

from pathlib import Path

from ..panel import actions as A
from ..panel.controller import DockController, PanelController
from ..panel.dock import DockPanel
from ..runtime.qt import QAction, QActionGroup, Qt, QtGui, QtWidgets
from .canvas import CanvasView, Tool
from .document import EditorDocument
from .fileio import OPEN_FILTER, SAVE_FILTER, FileError, open_document, save_document
from .host import EditorHost
from .layers_panel import LayersPanel

TOOL_KEYS = {Tool.RECT: ("Rectangle select", "M"), Tool.ELLIPSE: ("Ellipse select", "J"),
             Tool.LASSO: ("Freehand lasso", "L"), Tool.BRUSH: ("Soft brush selection", "B"),
             Tool.PAN: ("Pan", "H")}


class EditorWindow(QtWidgets.QMainWindow):
    windows: list = []     # every open window (new documents open in new windows)

    def __init__(self, document: EditorDocument | None = None, controller: PanelController | None = None,
                 session=None):
        super().__init__()
        if session is None:
            from ..session.dock_session import shared_session

            session = shared_session()
        self.session = session
        self.setObjectName("diffusion_dock_editor")
        self.confirm_close = True        # ask before losing unsaved changes (tests switch it off)
        self.last_error: str | None = None
        self.document: EditorDocument | None = None
        self.host = EditorHost(self)
        self.controller = controller or DockController()
        self.canvas = CanvasView()
        self.setCentralWidget(self.canvas)

        self.panel = DockPanel(host=self.host, session=self.session)
        self.dock = QtWidgets.QDockWidget(A.DOCK_TITLE, self)
        self.dock.setObjectName(A.DOCK_ID)
        self.dock.setWidget(self.panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.controller.register(self.panel)

        self.layers_panel = LayersPanel()
        self.layers_dock = QtWidgets.QDockWidget("Layers", self)
        self.layers_dock.setObjectName("layers")
        self.layers_dock.setWidget(self.layers_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.layers_dock)

        self.status = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.status)
        self.canvas.view_changed.connect(self._update_status)
        self.canvas.cursor_moved.connect(self._update_status)
        self._build_actions()
        self.set_document(document or EditorDocument.new(1024, 768))
        self.resize(1400, 900)
        self.resizeDocks([self.dock, self.layers_dock], [720, 160], Qt.Orientation.Vertical)
        self.resizeDocks([self.dock], [400], Qt.Orientation.Horizontal)
        EditorWindow.windows.append(self)

    def open_in_new_window(self, doc: EditorDocument) -> EditorWindow:
        """Open ``doc`` in a new window sharing this one's dock session and actions."""
        window = EditorWindow(doc, controller=self.controller, session=self.session)
        window.confirm_close = self.confirm_close
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        window.show()
        return window

    # -- documents
    def set_document(self, doc: EditorDocument) -> None:
        old = self.document
        if old is not None:
            old.closed = True
            old.clear_preview()
            stack = old.undo_stack
            for signal, slot in ((stack.cleanChanged, self._update_title),
                                 (stack.canUndoChanged, self.undo_action.setEnabled),
                                 (stack.canRedoChanged, self.redo_action.setEnabled)):
                try:
                    signal.disconnect(slot)
                except (TypeError, RuntimeError):
                    pass
        doc.setParent(self)           # the window owns its document (and so its undo stack)
        self.document = doc
        self.canvas.set_document(doc)
        self.layers_panel.set_document(doc)
        doc.undo_stack.cleanChanged.connect(self._update_title)
        self.undo_action.setEnabled(False)
        self._bind_undo(doc)
        self._update_title()
        for signal in (doc.selection_changed, doc.active_changed, doc.layers_changed):
            signal.connect(self._context_changed)
        self._context_changed()

    def _context_changed(self, *_args) -> None:
        panel = self.panel
        if hasattr(panel, "canvas_changed"):
            panel.canvas_changed()

    def _bind_undo(self, doc: EditorDocument) -> None:
        for action in (self.undo_action, self.redo_action):
            try:
                action.triggered.disconnect()
            except (TypeError, RuntimeError):
                pass
        self.undo_action.triggered.connect(doc.undo_stack.undo)
        self.redo_action.triggered.connect(doc.undo_stack.redo)
        doc.undo_stack.canUndoChanged.connect(self.undo_action.setEnabled)
        doc.undo_stack.canRedoChanged.connect(self.redo_action.setEnabled)
        self.undo_action.setEnabled(doc.undo_stack.canUndo())
        self.redo_action.setEnabled(doc.undo_stack.canRedo())

    def _update_title(self, *_args) -> None:
        doc = self.document
        try:
            modified = doc.modified
        except RuntimeError:          # the undo stack is being destroyed with the window
            return
        self.setWindowTitle(f"{doc.name}{' *' if modified else ''} — Diffusion Dock editor")

    def _update_status(self, *_args) -> None:
        self.status.setText(f"{self.document.width} × {self.document.height} px   {self.canvas.zoom * 100:.0f} %")

    def open_path(self, path) -> bool:
        try:
            doc = open_document(path)
        except FileError as e:
            self._error(str(e))
            return False
        self.set_document(doc)
        return True

    def save_path(self, path) -> bool:
        try:
            layered = save_document(self.document, path)
        except FileError as e:
            self._error(str(e))
            return False
        if layered:
            self.document.path = str(path)
            self.document.name = Path(path).name
            self.document.undo_stack.setClean()
            self.statusBar().showMessage(f"Saved {path}", 5000)
        else:
            self.statusBar().showMessage(f"Saved a flattened copy to {path}; save as .ora to keep the layers",
                                         8000)
        self._update_title()
        return True

    def _error(self, message: str) -> None:
        """Status bar plus a window-modal message box that does not block the event loop."""
        self.last_error = message
        self.statusBar().showMessage(message, 10000)
        if self.isVisible():
            box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Warning, "Diffusion Dock editor", message,
                                        QtWidgets.QMessageBox.StandardButton.Ok, self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()

    # -- menus and tools
    def _action(self, menu, text, slot, shortcut=None, tip=None) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QtGui.QKeySequence(shortcut))
        if tip:
            action.setToolTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_actions(self) -> None:
        bar = self.menuBar()
        std = QtGui.QKeySequence.StandardKey
        m = bar.addMenu("&File")
        self._action(m, "&New…", self._new, std.New)
        self._action(m, "&Open…", self._open, std.Open)
        self._action(m, "&Save", self._save, std.Save)
        self._action(m, "Save &As…", self._save_as, std.SaveAs)
        m.addSeparator()
        self._action(m, "&Quit", self.close, std.Quit)

        m = bar.addMenu("&Edit")
        self.undo_action = self._action(m, "&Undo", lambda: None, std.Undo)
        self.redo_action = self._action(m, "&Redo", lambda: None, std.Redo)
        m.addSeparator()
        self._action(m, "Select &All", lambda: self.document.select_all(), std.SelectAll)
        self._action(m, "&Deselect", lambda: self.document.deselect(), "Ctrl+Shift+A")
        self._action(m, "&Invert Selection", lambda: self.document.invert_selection(), "Ctrl+I")

        m = bar.addMenu("&View")
        self._action(m, "Zoom &In", self.canvas.zoom_in, std.ZoomIn)
        self._action(m, "Zoom &Out", self.canvas.zoom_out, std.ZoomOut)
        self._action(m, "&Fit to Window", self.canvas.fit, "Ctrl+0")
        self._action(m, "&Actual Size", self.canvas.actual_size, "Ctrl+1")

        m = bar.addMenu("&Layer")
        self._action(m, "&New Layer", self.layers_panel.add_layer, "Ctrl+Shift+N")
        self._action(m, "&Delete Layer", self.layers_panel.delete_layer)
        self._action(m, "&Raise Layer", self.layers_panel.raise_layer, "Ctrl+]")
        self._action(m, "&Lower Layer", self.layers_panel.lower_layer, "Ctrl+[")

        tools = self.addToolBar("Tools")
        tools.setObjectName("tools")
        group = QActionGroup(self)
        self.tool_actions = {}
        for tool, (text, key) in TOOL_KEYS.items():
            action = QAction(text, self)
            action.setCheckable(True)
            action.setShortcut(QtGui.QKeySequence(key))
            action.setToolTip(f"{text} ({key})" + ("" if tool is Tool.PAN else
                              ": Shift adds, Alt subtracts" + (", Shift+Alt intersects" if tool is not Tool.BRUSH
                                                               else "")))
            action.triggered.connect(lambda _checked=False, t=tool: self.set_tool(t))
            group.addAction(action)
            tools.addAction(action)
            self.tool_actions[tool] = action
        self.tool_actions[Tool.RECT].setChecked(True)
        tools.addSeparator()
        tools.addWidget(QtWidgets.QLabel(" Brush "))
        self.brush_size = spin_box(1, 1000, int(self.canvas.brush_radius * 2), " px")
        self.brush_size.valueChanged.connect(lambda v: setattr(self.canvas, "brush_radius", v / 2))
        tools.addWidget(self.brush_size)
        self.brush_hardness = spin_box(0, 100, int(self.canvas.brush_hardness * 100), " % hard")
        self.brush_hardness.valueChanged.connect(lambda v: setattr(self.canvas, "brush_hardness", v / 100))
        tools.addWidget(self.brush_hardness)

        m = bar.addMenu("&Diffusion")
        self.diffusion_actions = {}
        for spec in A.ACTIONS:
            self.diffusion_actions[spec.id] = self._action(
                m, spec.text, lambda _checked=False, i=spec.id: self.controller.trigger(i, "menu"),
                spec.shortcut or None, spec.tooltip)

    def set_tool(self, tool: Tool) -> None:
        self.canvas.tool = tool
        self.tool_actions[tool].setChecked(True)

    # -- file actions
    def _new(self) -> None:
        w, ok = QtWidgets.QInputDialog.getInt(self, "New image", "Width (px):", 1024, 1, 16384)
        if not ok:
            return
        h, ok = QtWidgets.QInputDialog.getInt(self, "New image", "Height (px):", 768, 1, 16384)
        if ok and self._may_discard():
            self.set_document(EditorDocument.new(w, h))

    def _open(self) -> None:
        if not self._may_discard():
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open image", "", OPEN_FILTER)
        if path:
            self.open_path(path)

    def _save(self) -> None:
        path = self.document.path
        if path and Path(path).suffix.lower() == ".ora":
            self.save_path(path)
        else:
            self._save_as()

    def _save_as(self) -> None:
        start = str(Path(self.document.path or self.document.name).with_suffix(".ora"))
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save image", start, SAVE_FILTER)
        if path:
            self.save_path(path)

    def _may_discard(self) -> bool:
        if not self.confirm_close or not self.document.modified:
            return True
        answer = QtWidgets.QMessageBox.question(
            self, "Unsaved changes", f"{self.document.name} has unsaved changes. Discard them?",
            QtWidgets.QMessageBox.StandardButton.Discard | QtWidgets.QMessageBox.StandardButton.Cancel)
        return answer == QtWidgets.QMessageBox.StandardButton.Discard

    def closeEvent(self, event):
        if self._may_discard():
            event.accept()
            if hasattr(self.panel, "clear_result_preview"):
                self.panel.clear_result_preview()
            if self in EditorWindow.windows:
                EditorWindow.windows.remove(self)
        else:
            event.ignore()


def spin_box(low: int, high: int, value: int, suffix: str) -> QtWidgets.QSpinBox:
    box = QtWidgets.QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setSuffix(suffix)
    return box
