"""``python -m plugin.diffusion_dock.editor [IMAGE] [--screenshot PNG]``: the standalone editor."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback

NO_DISPLAY = ("No display found: the Diffusion Dock editor needs a desktop session (X11 or Wayland).\n"
              "Without one, run the headless demo instead: ./run.sh")


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
    ap.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window once shown, then quit")
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


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not has_display():
        print(NO_DISPLAY, file=sys.stderr)
        return 2
    from ..coreapi import qasync
    from ..qt import QTimer, QtWidgets
    from .window import EditorWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("Diffusion Dock editor")
    window = EditorWindow()
    if args.image and not window.open_path(args.image):
        print(f"cannot open {args.image}", file=sys.stderr)
        return 2
    window.show()
    install_excepthook(window)
    loop = qasync().QEventLoop(app)
    asyncio.set_event_loop(loop)
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    app.lastWindowClosed.connect(closed.set)
    if args.screenshot:
        def shoot():
            window.grab().save(args.screenshot)
            window.confirm_close = False
            window.close()
        QTimer.singleShot(500, shoot)
    with loop:
        loop.run_until_complete(closed.wait())
    return 0


if __name__ == "__main__":
    sys.exit(main())
