"""The fake ``krita`` module against Krita's own API, so that it cannot drift: every method, signal,
constructor and enum the fake offers exists in Krita with the same name and argument count, as read
from the .sip files of Krita's Python bindings (tests/fake_krita/krita_api_*.json, written by
tests/fake_krita/sip_signatures.py from Krita 5.1.5's sources and from the Qt 6 tree's Node.sip).

And every Krita method the plugin really called on the fake (the host suite's run and the plugin's
registration scenario) exists in Krita 5.1 with an overload taking that many arguments; where the
Krita 6 data has the class, the differences between 5.1 and 6 for those methods are exactly
``KNOWN_DIFFERENCES`` (so a new one fails here until it is looked at).
"""

from __future__ import annotations

import inspect
import textwrap

import pytest

from tests.fake_krita import load_api, load_in_process
from tests.fake_krita.sip_signatures import parse_class, parse_dir, strip_comments

K = load_in_process()
API = {v: load_api(v) for v in ("5.1", "6")}
FAKE_CLASSES = ["Krita", "Window", "View", "Canvas", "Document", "Node", "GroupLayer", "Selection", "DockWidget",
                "DockWidgetFactoryBase", "Extension", "InfoObject", "Notifier"]
NO_PUBLIC_CONSTRUCTOR = {"Window", "View", "Canvas", "Document", "Node", "GroupLayer"}   # Krita makes them

# Krita methods the plugin calls whose signature differs between 5.1 and the Qt 6 tree (.sip data),
# plus what the binding changes.  Also in the final report of issue 21 and in DEVELOPERS.md.
KNOWN_DIFFERENCES = {
    ("Node", "setPixelData"): "returns void in 5.1, bool in 6 (same 5 arguments)",
}
BINDING_DIFFERENCES = {
    ("DockWidgetFactoryBase", "DockPosition"): "PyQt6 scopes sip enums: DockWidgetFactoryBase.DockPosition.DockRight "
                                               "only (DockWidgetFactoryBase.DockRight is gone)",
}


def sip_class(version: str, name: str) -> dict | None:
    """A class of the .sip data with the methods and signals of its sip bases merged in."""
    classes = API[version]["classes"]
    if name not in classes:
        return None
    c = classes[name]
    merged = {"methods": {}, "signals": {}, "constructors": c["constructors"], "enums": dict(c["enums"])}
    for base in c["bases"]:
        b = sip_class(version, base)
        if b is not None:
            for key in ("methods", "signals"):
                merged[key].update(b[key])
    for key in ("methods", "signals"):
        merged[key].update(c[key])
    return merged


def arity(fn) -> tuple[int, int]:
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    assert all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params), fn
    return sum(p.default is p.empty for p in params), len(params)


def fake_methods(cls) -> dict:
    return {n: f for n, f in vars(cls).items()
            if not n.startswith("_") and callable(f) and type(f).__name__ != "pyqtSignal" and not isinstance(f, type)}


def fake_signals(cls) -> dict:
    return {n: s for n, s in vars(cls).items() if type(s).__name__ == "pyqtSignal"}


def signal_args(sig) -> int:
    """Arguments of a PyQt signal from its signature, ``name(type, type)`` or ``(type, type)``."""
    text = sig.signatures[0]      # PyQt6 gives "name(types)", "(types)" or, after some uses, just ")"
    inside = (text.split("(", 1)[1] if "(" in text else text).rstrip(")")
    return 0 if not inside.strip() else len(inside.split(","))


def test_parser_reads_the_sip_subset(tmp_path):
    sip = textwrap.dedent("""
        class Thing : Base /NoDefaultCtors/
        {
        %TypeHeaderCode
        #include "Thing.h"   // { braces in code are skipped
        %End
            Thing(const Thing & __0);
        public:
            explicit Thing(QObject *parent /TransferThis/ = 0);
            virtual ~Thing();
            enum Where { Left, Right = 4 };
            bool operator==(const Thing &other) const;
        public Q_SLOTS:
            QMap<QString, QVariant> get(const QString &a, int b = f(1, 2), const QString &c = QString("x,y")) const;
            static Thing *make() /Factory/;
            void put(QByteArray value, int x);
        %MethodCode
            sipCpp->put(a0, a1);
        %End
        %If (Krita_Qt5)
            void old();
        %End
        protected Q_SLOTS:
            virtual void changed(Canvas *canvas) = 0;
        Q_SIGNALS:
            void moved(int x, int y);
        private:
            void hidden();
        };
    """)
    (tmp_path / "Thing.sip").write_text(sip)
    c = parse_dir(tmp_path)["Thing"]
    assert c["bases"] == ["Base"] and c["constructors"] == [[0, 1]]
    assert c["enums"] == {"Where": ["Left", "Right"]}
    assert c["methods"] == {"get": [[1, 3, "QMap<QString, QVariant>", []]], "make": [[0, 0, "Thing*", ["static"]]],
                            "put": [[2, 2, "void", []]], "old": [[0, 0, "void", ["if:Krita_Qt5"]]],
                            "changed": [[1, 1, "void", ["virtual", "pure", "protected"]]]}
    assert c["signals"] == {"moved": [[2, 2, "void", []]]}
    assert parse_class("X", [], strip_comments("public: int a(); // b()\n /* c(); */")) ["methods"] == {
        "a": [[0, 0, "int", []]]}


def test_signature_data_is_pinned():
    m51, m6 = API["5.1"]["meta"], API["6"]["meta"]
    assert "v5.1.5" in m51["source"] and "sha256 b85e39a07e09" in m51["source"]
    assert {"Krita", "Window", "View", "Document", "Node", "Selection", "DockWidget", "DockWidgetFactoryBase",
            "Extension", "InfoObject", "Notifier", "Canvas", "GroupLayer"} <= set(API["5.1"]["classes"])
    assert "961b654161ded8f6321e4bb3955321d35c0d3578" in m6["source"] and "UNVERIFIED" in m6["note"]


@pytest.mark.parametrize("name", FAKE_CLASSES)
def test_fake_methods_exist_in_krita_51(name):
    """Same name, and the fake accepts exactly the argument counts of one of Krita's overloads."""
    cls, sip = getattr(K, name), sip_class("5.1", name)
    assert sip is not None, name
    wrong = {}
    for meth, fn in fake_methods(cls).items():
        overloads = sip["methods"].get(meth)
        if overloads is None or tuple(arity(fn)) not in {(o[0], o[1]) for o in overloads}:
            wrong[meth] = (arity(fn), overloads)
    assert wrong == {}


@pytest.mark.parametrize("name", FAKE_CLASSES)
def test_fake_signals_exist_in_krita_51(name):
    cls, sip = getattr(K, name), sip_class("5.1", name)
    for sig_name, sig in fake_signals(cls).items():
        assert sig_name in sip["signals"], (name, sig_name)
        assert signal_args(sig) in {o[0] for o in sip["signals"][sig_name]}, (name, sig_name)
    if name in ("Notifier", "Window"):              # the fake emits every signal Krita declares there
        assert set(fake_signals(cls)) == set(sip["signals"])


@pytest.mark.parametrize("name", [n for n in FAKE_CLASSES if n not in NO_PUBLIC_CONSTRUCTOR])
def test_fake_constructors_match_krita_51(name):
    cls, sip = getattr(K, name), sip_class("5.1", name)
    lo, hi = arity(cls.__init__)
    assert [lo, hi] in [c[:2] for c in sip["constructors"]], (name, (lo, hi), sip["constructors"])


def test_dock_position_members_match_krita():
    sip = sip_class("5.1", "DockWidgetFactoryBase")
    assert [m.name for m in K.DockWidgetFactoryBase.DockPosition] == sip["enums"]["DockPosition"]
    # PyQt6 (Krita 6): scoped only.
    assert not hasattr(K.DockWidgetFactoryBase, "DockRight")


def test_fake_node_matches_the_qt6_tree():
    """Node is the class of which the Qt 6 tree's .sip could be read here."""
    sip = sip_class("6", "Node")
    for meth, fn in fake_methods(K.Node).items():
        assert tuple(arity(fn)) in {(o[0], o[1]) for o in sip["methods"][meth]}, meth


def called(fake6_run, fake_krita_plugin) -> set[tuple[str, str, int]]:
    calls = {tuple(c) for c in fake6_run[1]["api_calls"]} | {tuple(c) for c in fake_krita_plugin["calls"]}
    return {(c, m, n) for c, m, n in calls if c not in ("DockWidgetFactory",)}   # Krita's Python class, not sip


def test_every_call_the_plugin_makes_exists_in_krita_51(fake6_run, fake_krita_plugin):
    calls = called(fake6_run, fake_krita_plugin)
    assert len({(c, m) for c, m, _ in calls}) > 40
    missing = []
    for cls, meth, n in sorted(calls):
        sip = sip_class("5.1", cls)
        overloads = [] if sip is None else sip["methods"].get(meth, [])
        if not any(o[0] <= n <= o[1] for o in overloads):
            missing.append((cls, meth, n))
    assert missing == []


def api_differences(methods: set[tuple[str, str]]) -> tuple[dict, set]:
    """(method: how it differs between 5.1 and 6, classes the 6 data does not have)."""
    diffs, unverified = {}, set()
    for cls, meth in sorted(methods):
        s6 = sip_class("6", cls)
        if s6 is None:
            unverified.add(cls)
            continue
        o51, o6 = sip_class("5.1", cls)["methods"].get(meth), s6["methods"].get(meth)
        if o6 is None:
            diffs[(cls, meth)] = "missing in 6"
        elif {(o[0], o[1]) for o in o51} != {(o[0], o[1]) for o in o6}:
            diffs[(cls, meth)] = f"arguments {o51} in 5.1, {o6} in 6"
        elif {o[2] for o in o51} != {o[2] for o in o6}:
            diffs[(cls, meth)] = f"returns {o51[0][2]} in 5.1, {o6[0][2]} in 6"
    return diffs, unverified


def test_differences_between_krita_51_and_6_for_what_the_plugin_calls(fake6_run, fake_krita_plugin):
    methods = {(c, m) for c, m, _ in called(fake6_run, fake_krita_plugin)}
    diffs, unverified = api_differences(methods)
    assert set(diffs) == set(KNOWN_DIFFERENCES), diffs
    assert diffs[("Node", "setPixelData")] == "returns void in 5.1, bool in 6"
    # Named so that the report says it: these classes' 6.x .sip could not be read on this machine.
    assert unverified == {"Document", "DockWidget", "DockWidgetFactoryBase", "Extension", "Krita", "Notifier",
                          "Selection", "View", "Window", "Canvas"} & {c for c, _ in methods}
