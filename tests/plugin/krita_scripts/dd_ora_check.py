"""Runs inside kritarunner: opens an .ora written by the standalone editor and dumps what Krita
sees; then builds a document with an offset, half-transparent, hidden layer and saves it as .ora
for the editor to read.  Usage: kritarunner -s dd_ora_check -f main WORKDIR"""

import json
import os
import traceback

from krita import Krita
from PyQt5.QtCore import QByteArray


def main(args):
    work = args[0]
    out = {}
    try:
        k = Krita.instance()
        doc = k.openDocument(os.path.join(work, "editor.ora"))
        doc.setBatchmode(True)
        out["size"] = [doc.width(), doc.height()]
        out["color"] = [doc.colorModel(), doc.colorDepth()]
        layers = []
        for i, n in enumerate(reversed(doc.rootNode().childNodes())):
            if n.type().endswith("mask"):
                continue
            name = "layer%d.raw" % i
            with open(os.path.join(work, name), "wb") as f:
                f.write(bytes(n.pixelData(0, 0, doc.width(), doc.height())))
            layers.append({"name": n.name(), "type": n.type(), "visible": n.visible(), "opacity": n.opacity(),
                           "file": name})
        out["layers"] = layers
        doc.close()

        w, h = 50, 40
        made = k.createDocument(w, h, "kritamade", "RGBA", "U8", "", 72.0)
        made.setBatchmode(True)
        root = made.rootNode()
        with open(os.path.join(work, "krita_patch.in"), "rb") as f:
            patch = f.read()
        n = made.createNode("offset patch", "paintlayer")
        n.setPixelData(QByteArray(patch), 11, 7, 13, 9)
        root.addChildNode(n, None)
        hidden = made.createNode("hidden one", "paintlayer")
        hidden.setPixelData(QByteArray(bytes([0, 0, 255, 255]) * 16), 0, 0, 4, 4)
        hidden.setVisible(False)
        hidden.setOpacity(128)
        root.addChildNode(hidden, None)
        made.waitForDone()
        out["saved"] = bool(made.saveAs(os.path.join(work, "krita.ora")))
        made.waitForDone()
        made.close()
    except Exception:  # broad: report anything to the test
        out["crash"] = traceback.format_exc()
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
