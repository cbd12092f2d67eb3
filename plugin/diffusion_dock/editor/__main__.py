"""``python -m plugin.diffusion_dock.editor [IMAGE] [--select MASK] [--screenshot PNG]``: the standalone
editor."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

NO_DISPLAY = ("No display found: the Diffusion Dock editor needs a desktop session (X11 or Wayland).\n"
              "Without one, run the headless demo instead: .venv/bin/python -m core demo "
              "(./run.sh does that by itself when there is no display)")


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True                     # the user (or a test) chose a platform, e.g. offscreen
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m plugin.diffusion_dock.editor",
                                 description="Diffusion Dock's standalone editor.")
    ap.add_argument("image", nargs="?", help="an .ora, .png or .jpg file to open")
    ap.add_argument("--select", metavar="MASK",
                    help="start with this grayscale image as the selection (white = selected; ./run.sh selects "
                         "the sample's red ball)")
    ap.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window once shown, then quit")
    ap.add_argument("--check-display", action="store_true",
                    help="exit 0 when a display is available, 2 (with a message) when not")
    return ap.parse_args(argv)


def install_excepthook(window) -> None:
    """Report unexpected errors in the status bar and on stderr instead of letting PyQt abort the
    whole editor (its default for an exception raised in a slot)."""
    def hook(kind, exc, tb):
        traceback.print_exception(kind, exc, tb)
        try:
            window.statusBar().showMessage(f"Internal error: {kind.__name__}: {exc}", 15000)
        except RuntimeError:
            pass
    sys.excepthook = hook


def select_from_image(window, path) -> bool:
    """Make a grayscale image (white = selected, grey = partly) the document's selection."""
    from ..runtime.qt import QtGui
    from . import pixels

    img = QtGui.QImage(str(path))
    if img.isNull():
        return False
    gray = img.convertToFormat(QtGui.QImage.Format.Format_Grayscale8)
    doc = window.document
    w, h = min(gray.width(), doc.width), min(gray.height(), doc.height)
    mask = pixels.new_mask(doc.width, doc.height)
    pixels.write_rect(mask, 0, 0, w, h, pixels.read_rect(gray, pixels.Rect(0, 0, w, h)))
    doc.set_selection(mask)
    doc.undo_stack.clear()          # the starting state, not an edit to undo
    return True


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not has_display():
        print(NO_DISPLAY, file=sys.stderr)
        return 2
    if args.check_display:
        return 0
    from ..runtime import aio
    from ..runtime.qt import QTimer, QtWidgets
    from ..session.dock_session import shared_session
    from .window import EditorWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("Diffusion Dock editor")
    # The same arrangement as inside Krita: qasync's loop rides on the Qt event loop run by app.exec().
    aio.loop()
    session = shared_session(autostart=not args.screenshot)
    window = EditorWindow(session=session)
    if args.image and not window.open_path(args.image):
        print(f"cannot open {args.image}", file=sys.stderr)
        return 2
    if args.select and not select_from_image(window, args.select):
        print(f"cannot read the selection {args.select}", file=sys.stderr)
        return 2
    window.show()
    install_excepthook(window)
    if args.screenshot:
        def shoot():
            window.grab().save(args.screenshot)
            window.confirm_close = False
            window.close()
        QTimer.singleShot(500, shoot)
    app.aboutToQuit.connect(session.kill_engine_now)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
