"""Opening and saving: PNG and JPEG (one flattened image) and OpenRaster (.ora, layered).

OpenRaster (https://www.openraster.org) is a zip: ``mimetype`` first and stored uncompressed
(``image/openraster``), ``stack.xml`` (layers top to bottom, each a PNG at an x/y offset with
opacity and visibility), ``data/*.png``, ``mergedimage.png`` (the flattened image) and
``Thumbnails/thumbnail.png`` (at most 256 px).  Krita, GIMP and MyPaint read and write it.  Layers
are stored cropped to their content.  A result layer's provenance travels in a namespaced attribute
(``dd:provenance``, JSON) that other programs ignore.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from ..runtime.coreapi import atomic, geometry
from ..runtime.qt import QByteArray, QtCore, QtGui
from . import pixels
from .document import EditorDocument, Layer

Rect = geometry.Rect
ORA_MIME = b"image/openraster"
DD_NS = "urn:x-diffusion-dock:ora:1"
ET.register_namespace("dd", DD_NS)
THUMBNAIL_MAX = 256
FLAT_SUFFIXES = (".png", ".jpg", ".jpeg")
SUFFIXES = (".ora", *FLAT_SUFFIXES)
OPEN_FILTER = "Images (*.ora *.png *.jpg *.jpeg);;OpenRaster (*.ora);;PNG (*.png);;JPEG (*.jpg *.jpeg)"
SAVE_FILTER = "OpenRaster, keeps layers (*.ora);;PNG, flattened (*.png);;JPEG, flattened (*.jpg *.jpeg)"


class FileError(Exception):
    """A file could not be read or written; the message names the file and the reason."""


def _suffix(path) -> str:
    return Path(path).suffix.lower()


# ---------------------------------------------------------------------------------------------- PNG / JPEG

def _encoded(image: QtGui.QImage, fmt: str = "PNG", quality: int = -1) -> bytes:
    buf = QtCore.QBuffer()
    buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buf, fmt, quality):
        raise FileError(f"could not encode a {fmt}")
    return buf.data().data()


def _png_bytes(image: QtGui.QImage) -> bytes:
    return _encoded(image, "PNG")


def _image_from_bytes(data: bytes, what: str) -> QtGui.QImage:
    img = QtGui.QImage.fromData(QByteArray(data))
    if img.isNull():
        raise FileError(f"{what} is not a readable image")
    return img


def read_flat(path) -> EditorDocument:
    reader = QtGui.QImageReader(str(path))
    reader.setAutoTransform(True)          # honour EXIF orientation
    img = reader.read()
    if img.isNull():
        raise FileError(f"cannot open {path}: {reader.errorString()}")
    img = pixels.to_layer_format(img)
    doc = EditorDocument(img.width(), img.height(), Path(path).name)
    doc.insert_layer(Layer(Path(path).stem or "Background", img), 0)
    doc.undo_stack.clear()
    doc.path = str(path)
    return doc


def flattened(doc: EditorDocument, background: QtGui.QColor | None = None) -> QtGui.QImage:
    """The visible layers as one ARGB32 image.  A single visible, fully opaque layer is returned as
    is (no premultiplied round trip), so open → save keeps every byte."""
    visible = [layer for layer in doc.layers if layer.visible and layer.opacity > 0]
    if background is None and len(visible) == 1 and visible[0].opacity >= 1.0:
        return visible[0].image
    return doc.composite(with_preview=False, background=background).convertToFormat(pixels.LAYER_FORMAT)


def write_flat(doc: EditorDocument, path) -> None:
    jpeg = _suffix(path) in (".jpg", ".jpeg")
    # JPEG has no alpha: flatten over white, as image editors do.
    flat = flattened(doc, QtGui.QColor(255, 255, 255) if jpeg else None)
    if jpeg:
        flat = flat.convertToFormat(QtGui.QImage.Format.Format_RGB32)
    data = _encoded(flat, "JPEG" if jpeg else "PNG", 95 if jpeg else -1)
    with _writing(path) as f:
        f.write(data)


@contextlib.contextmanager
def _writing(path):
    """The project's atomic writer (temporary file beside ``path``, fsync, rename): a failure never leaves
    half a file, and the message names the file and the reason."""
    try:
        with atomic.open_atomic(path) as f:
            yield f
    except OSError as e:
        raise FileError(str(e) if isinstance(e, atomic.WriteError) else
                        f"cannot write {path}: {atomic.reason_of(e)}") from None


# ---------------------------------------------------------------------------------------------- OpenRaster

def write_ora(doc: EditorDocument, path) -> None:
    image_el = ET.Element("image", {"version": "0.0.5", "w": str(doc.width), "h": str(doc.height),
                                    "xres": "72", "yres": "72"})
    stack_el = ET.SubElement(image_el, "stack")
    files: list[tuple[str, bytes]] = []
    for i, layer in enumerate(doc.layers):           # top to bottom, as stack.xml wants
        bounds = layer.content_bounds() or Rect(0, 0, 1, 1)
        crop = layer.image.copy(bounds.x, bounds.y, bounds.w, bounds.h)
        src = f"data/layer{i:03d}.png"
        files.append((src, _png_bytes(crop)))
        attrs = {"name": layer.name, "src": src, "x": str(bounds.x), "y": str(bounds.y),
                 "opacity": f"{layer.opacity:.4g}", "visibility": "visible" if layer.visible else "hidden",
                 "composite-op": "svg:src-over"}
        if layer.provenance is not None:
            attrs[f"{{{DD_NS}}}provenance"] = json.dumps(layer.provenance, ensure_ascii=False, sort_keys=True)
        ET.SubElement(stack_el, "layer", attrs)
    merged = flattened(doc)
    thumb = merged
    if max(merged.width(), merged.height()) > THUMBNAIL_MAX:
        thumb = merged.scaled(THUMBNAIL_MAX, THUMBNAIL_MAX, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                              QtCore.Qt.TransformationMode.SmoothTransformation)
    stack_xml = ET.tostring(image_el, encoding="utf-8", xml_declaration=True)

    with _writing(path) as f, zipfile.ZipFile(f, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), ORA_MIME, compress_type=zipfile.ZIP_STORED)
        z.writestr("stack.xml", stack_xml, compress_type=zipfile.ZIP_DEFLATED)
        for name, data in files:      # PNGs are compressed already
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        z.writestr("mergedimage.png", _png_bytes(merged), compress_type=zipfile.ZIP_STORED)
        z.writestr("Thumbnails/thumbnail.png", _png_bytes(thumb), compress_type=zipfile.ZIP_STORED)


def read_ora(path) -> EditorDocument:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "mimetype" in names and z.read("mimetype").strip() != ORA_MIME:
                raise FileError(f"{path} is not an OpenRaster file (mimetype {z.read('mimetype')[:40]!r})")
            if "stack.xml" not in names:
                raise FileError(f"{path} has no stack.xml: not an OpenRaster file")
            root = ET.fromstring(z.read("stack.xml"))
            if root.tag != "image":
                raise FileError(f"{path}: stack.xml does not start with <image>")
            w, h = int(root.get("w", "0")), int(root.get("h", "0"))
            if not (1 <= w <= 16384 and 1 <= h <= 16384):
                raise FileError(f"{path}: canvas {w}x{h} is outside 1–16384 px")
            doc = EditorDocument(w, h, Path(path).name)
            layers: list[Layer] = []
            top = root.find("stack")
            if top is not None:
                _read_stack(z, top, 0, 0, True, 1.0, (w, h), layers, path)
    except (zipfile.BadZipFile, ET.ParseError, ValueError, KeyError) as e:
        raise FileError(f"cannot read {path}: {e}") from None
    except OSError as e:
        raise FileError(f"cannot read {path}: {e.strerror or e}") from None
    for i, layer in enumerate(layers):
        doc.layers.insert(i, layer)
    if not layers:
        doc.layers.append(Layer("Background", pixels.new_layer_image(w, h)))
    doc.active_id = doc.layers[0].id
    doc.path = str(path)
    return doc


def _read_stack(z, stack, ox, oy, visible, opacity, size, out, path) -> None:
    """Layers of ``stack`` (and nested stacks, flattened) appended to ``out`` top to bottom."""
    for el in stack:
        x = ox + int(float(el.get("x", "0")))
        y = oy + int(float(el.get("y", "0")))
        vis = visible and el.get("visibility", "visible") != "hidden"
        op = opacity * float(el.get("opacity", "1"))
        if el.tag == "stack":
            _read_stack(z, el, x, y, vis, op, size, out, path)
        elif el.tag == "layer":
            src = el.get("src", "")
            member = posixpath.normpath(src)
            if not src or member.startswith("..") or member not in z.namelist():
                raise FileError(f"{path}: layer {el.get('name', '')!r} points to a missing file {src!r}")
            img = pixels.to_layer_format(_image_from_bytes(z.read(member), f"{path}:{src}"))
            canvas = pixels.new_layer_image(*size)
            pixels.write_rect(canvas, x, y, img.width(), img.height(),
                              pixels.read_rect(img, Rect(0, 0, img.width(), img.height())))
            prov = el.get(f"{{{DD_NS}}}provenance")
            try:
                prov = json.loads(prov) if prov else None
            except ValueError:
                prov = None
            out.append(Layer(el.get("name") or f"Layer {len(out) + 1}", canvas, visible=vis,
                             opacity=max(0.0, min(1.0, op)), provenance=prov))


# ---------------------------------------------------------------------------------------------- dispatch

def open_document(path) -> EditorDocument:
    suffix = _suffix(path)
    if suffix == ".ora":
        return read_ora(path)
    if suffix in FLAT_SUFFIXES:
        return read_flat(path)
    raise FileError(f"cannot open {Path(path).name}: use .ora, .png, .jpg or .jpeg")


def save_document(doc: EditorDocument, path) -> bool:
    """Save; returns True when the file keeps the layers (.ora), False when it is flattened."""
    suffix = _suffix(path)
    if suffix == ".ora":
        write_ora(doc, path)
        return True
    if suffix in FLAT_SUFFIXES:
        write_flat(doc, path)
        return False
    raise FileError(f"cannot save as {Path(path).name}: use .ora, .png, .jpg or .jpeg")
