"""The layer list: top layer first, a checkbox per layer for visibility, double-click to rename,
buttons to add, delete, raise and lower.  Every change goes through the document (undoable)."""

from __future__ import annotations

from ..runtime.qt import QAction, Qt, QtWidgets
from .document import EditorDocument

ID_ROLE = Qt.ItemDataRole.UserRole


class LayersPanel(QtWidgets.QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("layers_panel")
        self.doc: EditorDocument | None = None
        self._syncing = False
        self.list = QtWidgets.QListWidget()
        self.list.setObjectName("layer_list")
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.currentItemChanged.connect(self._on_current)
        bar = QtWidgets.QToolBar()
        self.add_action = QAction("Add", self, triggered=self.add_layer)
        self.delete_action = QAction("Delete", self, triggered=self.delete_layer)
        self.raise_action = QAction("Up", self, triggered=self.raise_layer)
        self.lower_action = QAction("Down", self, triggered=self.lower_layer)
        for action, tip in ((self.add_action, "New layer above the active one"),
                            (self.delete_action, "Delete the active layer"),
                            (self.raise_action, "Move the active layer up"),
                            (self.lower_action, "Move the active layer down")):
            action.setToolTip(tip)
            bar.addAction(action)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addWidget(bar)

    def set_document(self, doc: EditorDocument) -> None:
        if self.doc is not None:
            for signal in (self.doc.layers_changed, self.doc.active_changed):
                try:
                    signal.disconnect(self.refresh)
                except (TypeError, RuntimeError):
                    pass
        self.doc = doc
        doc.layers_changed.connect(self.refresh)
        doc.active_changed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_args) -> None:
        if self.doc is None:
            return
        self._syncing = True
        try:
            self.list.clear()
            active = self.doc.active_layer()
            for layer in self.doc.stack():
                preview = self.doc.preview is not None and layer is self.doc.preview.layer
                item = QtWidgets.QListWidgetItem(layer.name)
                item.setData(ID_ROLE, "" if preview else layer.id)
                flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                if not preview:
                    flags |= Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEditable
                    item.setCheckState(Qt.CheckState.Checked if layer.visible else Qt.CheckState.Unchecked)
                else:
                    font = item.font()
                    font.setItalic(True)
                    item.setFont(font)
                item.setFlags(flags)
                self.list.addItem(item)
                if active is not None and layer is active:
                    self.list.setCurrentItem(item)
            has = bool(self.doc.layers)
            self.delete_action.setEnabled(len(self.doc.layers) > 1)
            self.raise_action.setEnabled(has)
            self.lower_action.setEnabled(has)
        finally:
            self._syncing = False

    def _on_item_changed(self, item) -> None:
        if self._syncing or self.doc is None or not item.data(ID_ROLE):
            return
        # Read the item before touching the document: the change rebuilds the list (and the item).
        layer_id, text = item.data(ID_ROLE), item.text().strip()
        visible = item.checkState() == Qt.CheckState.Checked
        if text and text != self.doc.layer(layer_id).name:
            self.doc.rename_layer(layer_id, text)
        else:
            self.doc.set_visible(layer_id, visible)

    def _on_current(self, current, _previous) -> None:
        if self._syncing or self.doc is None or current is None or not current.data(ID_ROLE):
            return
        self.doc.set_active(current.data(ID_ROLE))

    def _active_id(self) -> str | None:
        layer = self.doc.active_layer() if self.doc else None
        return layer.id if layer else None

    def add_layer(self) -> None:
        if self.doc is not None:
            self.doc.add_layer()

    def delete_layer(self) -> None:
        if self.doc is not None and len(self.doc.layers) > 1 and self._active_id():
            self.doc.remove_layer(self._active_id())

    def raise_layer(self) -> None:
        if self._active_id():
            self.doc.raise_layer(self._active_id())

    def lower_layer(self) -> None:
        if self._active_id():
            self.doc.lower_layer(self._active_id())
