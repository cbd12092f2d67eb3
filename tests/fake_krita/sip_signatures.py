"""Signatures of Krita's Python API, read from the ``.sip`` files of its bindings
(``plugins/extensions/pykrita/sip/krita/*.sip`` in Krita's sources), as a small JSON data file.

Only names and argument counts are kept (no code of Krita's): per class its bases, its public and
protected methods (each overload as ``[min args, max args, return type, flags]``), its signals and its
enums.  ``python -m tests.fake_krita.sip_signatures SIP_DIR --label "Krita 5.1.5" --source "..." > out.json``
writes one; ``tests/plugin/test_fake_krita_api.py`` checks the fake ``krita`` module against them.

The parser knows the subset of sip that those files use: ``class A : B /Annot/ { ... };`` with access
sections (``public:``, ``public Q_SLOTS:``, ``protected Q_SLOTS:``, ``Q_SIGNALS:``, ``private:``; a class
starts private), ``%Directive ... %End`` blocks (skipped, except ``%If (Feature) ... %End``, whose
methods are kept with their condition), ``enum [class] E { A, B };``, comments, and declarations
``[static|virtual|explicit] Type name(args) [const] [/Annot/] [= 0];``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SECTION = re.compile(r"^(public|protected|private)?\s*(Q_SLOTS|Q_SIGNALS|signals|slots)?\s*:$")
DIRECTIVE_BLOCKS = ("%TypeHeaderCode", "%MethodCode", "%ConvertToSubClassCode", "%TypeCode", "%ModuleHeaderCode",
                    "%ConvertToTypeCode", "%ConvertFromTypeCode", "%Docstring", "%VirtualCatcherCode",
                    "%ModuleCode", "%PostInitialisationCode", "%PreInitialisationCode", "%GCTraverseCode",
                    "%GCClearCode", "%PickleCode", "%FinalisationCode")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def split_top(s: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside <>, (), [] and quotes."""
    out, depth, cur, quote = [], 0, [], None
    for ch in s:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def parse_args(args: str) -> tuple[int, int]:
    """(minimum, maximum) number of Python arguments of a C++ argument list."""
    parts = [a for a in split_top(args) if a and a != "void"]
    defaults = 0
    for a in parts:
        a = re.sub(r"/[^/]*/", "", a)       # argument annotations such as /TransferThis/
        if len(split_top(a, "=")) > 1:
            defaults += 1
    return len(parts) - defaults, len(parts)


DECL = re.compile(r"^(?P<head>.*?)\b(?P<name>~?[A-Za-z_]\w*|operator\s*\S+?)\s*\((?P<args>.*)\)\s*"
                  r"(?P<const>const)?\s*(?P<annot>/[^/]*/)?\s*(?P<pure>=\s*0)?\s*(?:/[^/]*/)?\s*$", re.S)


def statements(body: str):
    """Yield (kind, text) of a class body: 'section', 'if', 'endif', 'enum', 'decl'."""
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i].isspace():
            i += 1
        if i >= n:
            break
        if body.startswith("%", i):
            word = re.match(r"%\w+", body[i:]).group(0)
            if word == "%If":
                m = re.match(r"%If\s*\(([^)]*)\)", body[i:])
                yield "if", m.group(1).strip()
                i += m.end()
            elif word == "%End":
                yield "endif", ""
                i += 4
            else:                           # %TypeHeaderCode, %MethodCode, ... up to their %End
                end = body.find("%End", i)
                i = end + 4 if end >= 0 else n
            continue
        m = re.match(r"(public|protected|private)?\s*(Q_SLOTS|Q_SIGNALS|signals|slots)?\s*:(?!:)", body[i:])
        if m and m.group(0).strip() != ":":
            yield "section", m.group(0)[:-1].strip()
            i += m.end()
            continue
        m = re.match(r"enum\s+(class\s+)?(\w+)[^{]*\{(.*?)\}\s*;", body[i:], re.S)
        if m:
            yield "enum", (m.group(2), m.group(3))
            i += m.end()
            continue
        # a declaration up to ';' at depth 0 (there are no nested blocks left but %MethodCode, handled above)
        j, depth = i, 0
        while j < n:
            ch = body[j]
            if ch in "(<{":
                depth += 1
            elif ch in ")>}":
                depth -= 1
            elif ch == ";" and depth <= 0:
                break
            elif ch == "%" and depth <= 0:
                break
            j += 1
        text = body[i:j].strip()
        i = j + 1 if j < n and body[j] == ";" else j
        if text:
            yield "decl", text


def class_blocks(text: str):
    """Yield (name, bases, body) of each top-level class."""
    for m in re.finditer(r"^\s*class\s+(\w+)\s*(?::\s*([^{/]*))?(?:/[^/]*/\s*)?\{", text, re.M):
        start = m.end()
        depth, j = 1, start
        while depth and j < len(text):
            if text.startswith("%", j) and not text.startswith("%End", j) and not text.startswith("%If", j):
                end = text.find("%End", j)
                j = end + 4
                continue
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        bases = [b.replace("public", "").strip() for b in (m.group(2) or "").split(",") if b.strip()]
        yield m.group(1), bases, text[start:j - 1]


def parse_class(name: str, bases: list[str], body: str) -> dict:
    cls: dict = {"bases": bases, "methods": {}, "signals": {}, "enums": {}, "constructors": []}
    access, kind, conditions = "private", "method", []
    for what, value in statements(body):
        if what == "section":
            words = value.split()
            access = words[0] if words and words[0] in ("public", "protected", "private") else "public"
            kind = "signal" if any(w in ("Q_SIGNALS", "signals") for w in words) else "method"
            continue
        if what == "if":
            conditions.append(value)
            continue
        if what == "endif":
            if conditions:
                conditions.pop()
            continue
        if what == "enum":
            ename, members = value
            if access != "private":
                cls["enums"][ename] = [mm.split("=")[0].strip() for mm in split_top(members) if mm.strip()]
            continue
        if access == "private":
            continue
        m = DECL.match(" ".join(value.split()))
        if not m:
            continue
        head, mname = m.group("head").split(), m.group("name").replace(" ", "")
        lo, hi = parse_args(m.group("args"))
        flags = [w for w in head if w in ("static", "virtual")]
        if m.group("pure"):
            flags.append("pure")
        if access == "protected":
            flags.append("protected")
        flags += [f"if:{c}" for c in conditions]
        if m.group("head").rstrip().endswith("~"):
            continue
        if mname == name:
            cls["constructors"].append([lo, hi] + ([f"if:{c}" for c in conditions] if conditions else []))
            continue
        if mname.startswith("~") or mname.startswith("operator") or m.group("head").rstrip().endswith("~"):
            continue
        returns = " ".join(w for w in head if w not in ("static", "virtual", "explicit", "inline")) or "void"
        entry = [lo, hi, returns.replace(" *", "*").replace(" &", "&"), flags]
        cls["signals" if kind == "signal" else "methods"].setdefault(mname, []).append(entry)
    return cls


def parse_dir(sip_dir: Path) -> dict:
    classes = {}
    for path in sorted(Path(sip_dir).glob("*.sip")):
        text = strip_comments(path.read_text(encoding="utf-8", errors="replace"))
        for name, bases, body in class_blocks(text):
            classes[name] = parse_class(name, bases, body)
    return classes


def dump(classes: dict, meta: dict) -> str:
    """JSON with one line per class member list, small and diff-friendly."""
    lines = ["{", f' "meta": {json.dumps(meta, sort_keys=True)},', ' "classes": {']
    names = sorted(classes)
    for k, name in enumerate(names):
        c = classes[name]
        lines.append(f"  {json.dumps(name)}: {{")
        parts = [f'   "bases": {json.dumps(c["bases"])}', f'   "constructors": {json.dumps(c["constructors"])}',
                 f'   "enums": {json.dumps(c["enums"], sort_keys=True)}']
        for key in ("signals", "methods"):
            inner = [f'    {json.dumps(m)}: {json.dumps(c[key][m])}' for m in sorted(c[key])]
            parts.append(f'   "{key}": {{' + ("\n" + ",\n".join(inner) + "\n   }" if inner else "}"))
        lines.append(",\n".join(parts))
        lines.append("  }" + ("," if k < len(names) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sip_dir", type=Path)
    ap.add_argument("--label", required=True, help='e.g. "Krita 5.1.5"')
    ap.add_argument("--source", required=True, help="where the .sip files came from (tag, commit, archive + sha256)")
    ap.add_argument("--only", nargs="*", help="keep only these classes")
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    classes = parse_dir(a.sip_dir)
    if a.only:
        classes = {k: v for k, v in classes.items() if k in a.only}
    meta = {"label": a.label, "source": a.source, "files": sorted(p.name for p in a.sip_dir.glob("*.sip"))}
    if a.note:
        meta["note"] = a.note
    sys.stdout.write(dump(classes, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
