"""The dock's results: the strip of saved results with Apply, Apply all, Discard and Reuse, the line
about the selected result, and its preview on the canvas.  What the buttons do to the document is
``session.results.ResultActions``; this widget only shows and wires it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..runtime.qt import QtGui, QTimer, QtWidgets
from ..session.results import ResultActions
from .widgets import ResultsStrip

log = logging.getLogger(__name__)


class ResultsView(QtWidgets.QWidget):
    """``say(text, kind)`` shows a message in the dock; ``reuse(provenance, name)`` loads a result's
    settings into the form; ``applied()`` runs after results were applied (the context line)."""

    def __init__(self, session, actions: ResultActions, say: Callable[[str, str], None],
                 reuse: Callable[[dict, str], None], applied: Callable[[], None], parent=None):
        super().__init__(parent)
        self.session, self.result_actions = session, actions
        self._say, self._reuse, self._applied = say, reuse, applied
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QtWidgets.QLabel("Results"))
        self.strip = ResultsStrip()
        self.strip.itemSelectionChanged.connect(self._on_selection)
        layout.addWidget(self.strip)
        row = QtWidgets.QHBoxLayout()
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.apply_button.setObjectName("apply")
        self.apply_button.setToolTip("Add the selected result(s) as new layers above their source layer")
        self.apply_all_button = QtWidgets.QPushButton("Apply all")
        self.apply_all_button.setObjectName("apply_all")
        self.apply_all_button.setToolTip("Apply every result of the job (the selected one's, else the latest)")
        self.discard_button = QtWidgets.QPushButton("Discard")
        self.discard_button.setObjectName("discard")
        self.discard_button.setToolTip("Remove the selected result(s) from the strip and from disk")
        self.reuse_button = QtWidgets.QToolButton()
        self.reuse_button.setObjectName("reuse_settings")
        self.reuse_button.setText("Reuse")
        self.reuse_button.setToolTip("Load the selected result's mode, prompt, seed and settings (to re-run it)")
        self.apply_button.clicked.connect(lambda: self.apply(self.strip.selected_records()))
        self.apply_all_button.clicked.connect(self.apply_all)
        self.discard_button.clicked.connect(lambda: self.discard(self.strip.selected_records()))
        self.reuse_button.clicked.connect(self.reuse_selected)
        for b in (self.apply_button, self.apply_all_button, self.discard_button, self.reuse_button):
            row.addWidget(b)
        layout.addLayout(row)
        self.info = QtWidgets.QLabel()
        self.info.setObjectName("result_info")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        # Bound methods, not lambdas: Qt disconnects them when this widget goes, while the session (shared
        # by every dock of the editor) lives on.
        session.results_added.connect(self._on_added)
        session.result_changed.connect(self._on_changed)
        self._update_buttons()

    def _thumbnail(self, rec):
        path = self.session.store.thumbnail_path(rec.id)
        if path is None:
            return None
        img = QtGui.QImage(str(path))
        return None if img.isNull() else img

    def load_history(self) -> None:
        """The saved results, newest first; result files that cannot be read are skipped and named."""
        try:
            records = self.session.history()
        except OSError as e:
            log.warning("cannot read the results folder: %s", e)
            return
        self.strip.add_records(records, self._thumbnail, at_top=False)
        self._update_buttons()
        broken = self.session.store.broken_summary()
        if broken:
            self._say(broken, "warning")

    def _on_added(self, records) -> None:
        self.strip.add_records(records, self._thumbnail, at_top=True)

    def _on_changed(self, rec) -> None:
        if rec is not None:
            self.strip.refresh_record(rec)
        self._update_buttons()

    def _on_selection(self) -> None:
        recs = self.strip.selected_records()
        self._update_buttons()
        if len(recs) == 1:
            rec = recs[0]
            stats = rec.stats or {}
            timing = (f"\n{stats.get('seconds', 0):.1f} s · largest UI stall {stats['max_stall_ms']:.0f} ms"
                      if "max_stall_ms" in stats else "")
            self.info.setText(rec.name + timing + "".join(f"\n⚠ {w}" for w in rec.warnings))
            self.preview(rec)
        else:
            self.info.setText(f"{len(recs)} results selected" if recs else "")
            # Not at once: a selection moving from one result to another may pass through none, and
            # the preview layer is reused when the next one comes (in Krita each removal and
            # insertion of a layer is an undo step).
            QTimer.singleShot(0, self._clear_preview_unless_one_selected)

    def _clear_preview_unless_one_selected(self) -> None:
        if len(self.strip.selected_records()) != 1:
            self.result_actions.clear_preview()

    def _update_buttons(self) -> None:
        recs = self.strip.selected_records()
        self.apply_button.setEnabled(bool(recs))
        self.discard_button.setEnabled(bool(recs))
        self.reuse_button.setEnabled(len(recs) == 1)
        self.apply_all_button.setEnabled(self.strip.count() > 0)

    def select_first_of(self, results) -> None:
        """Select (and so preview) the first of a job's new results."""
        first = self.strip.item_of(results[0].id) if results else None
        if first is not None:
            self.strip.clearSelection()
            first.setSelected(True)
            self.strip.setCurrentItem(first)

    def preview(self, rec) -> None:
        """Show a result on the canvas without committing it (a temporary locked layer)."""
        problem = self.result_actions.preview(rec)
        if problem:
            self.info.setText(f"{rec.name}\n(no preview: {problem})")

    def apply(self, records) -> list:
        """Each result becomes a NEW layer above its source (or a new document); returns what was created."""
        done = self.result_actions.apply(records)
        for note in done.notes:
            self._say(note, "info")
        if done.error:
            self._say(done.error, "error")
        self._applied()
        return done.created

    def apply_all(self) -> list:
        """Every result of one job not applied yet: the selected result's job, else the latest job."""
        todo = ResultActions.job_to_apply(self.strip.records.values(), self.strip.selected_records())
        return self.apply(todo) if todo else []

    def discard(self, records) -> None:
        records = list(records)
        self.result_actions.discard(records)
        for rec in records:
            self.strip.remove_record(rec.id)
        self._update_buttons()

    def reuse_selected(self) -> None:
        recs = self.strip.selected_records()
        if len(recs) == 1:
            self._reuse({"mode": recs[0].mode, **(recs[0].provenance or {})}, recs[0].name)
