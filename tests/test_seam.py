"""One seam: only ``steerlab/backends/`` hooks a model, replaces a module's ``forward`` or
reaches into the transformers module (``model.hf``); ``models.py`` builds the ``Model`` and
owns its weight-level facts. The lessons and their reference solutions (``steerlab/teach/``)
teach raw hooks on purpose and are left out."""

import re
from pathlib import Path

import steerlab

PACKAGE = Path(steerlab.__file__).parent
FORBIDDEN = {
    "registers a hook": re.compile(r"register_(forward|full_backward|backward)(_pre)?_hook"
                                   r"|\.add_hook\("),
    "reads private hook dicts": re.compile(r"_forward_hooks|_forward_pre_hooks"),
    "replaces a forward": re.compile(r"\.forward\s*=(?!=)"),
    "touches model.hf": re.compile(r"\.hf\b(?!_id)"),
    "imports a hooking library": re.compile(r"^\s*(from|import)\s+(transformer_lens|nnsight)\b",
                                            re.M),
}
OWNER = {"touches model.hf": {"models.py"}}  # the Model's own definition


def _offences(text: str, rules: dict[str, re.Pattern[str]], name: str) -> list[str]:
    out = []
    for what, rx in rules.items():
        if name in OWNER.get(what, set()):
            continue
        for m in rx.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(f"{name}:{line} {what}")
    return out


def test_only_backends_touch_the_model():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("backends", "teach"):
            continue
        found += _offences(path.read_text(), FORBIDDEN, str(rel))
    assert not found, "outside steerlab/backends/:\n" + "\n".join(found)


def test_the_grep_finds_what_it_looks_for():
    """The rules are not vacuous: each catches the line it is meant to catch."""
    bad = ("h = model.layers[0].register_forward_hook(f)\n"
           "if b._forward_hooks: pass\n"
           "block.forward = recorded\n"
           "model.hf.generate(**enc)\n"
           "import nnsight\n")
    found = _offences(bad, FORBIDDEN, "x.py")
    assert [f.split(" ", 1)[1] for f in found] == list(FORBIDDEN)
    assert not _offences("model.hf_id\nif a.forward == b: pass\n", FORBIDDEN, "x.py")


#: the fast-path protocol's methods (steerlab.engine.FastPath), called only from the engine
FAST_PATH = re.compile(r"\.(record|replaying|forward_shared|greedy|fast_paths)\(")


def test_only_the_engine_calls_the_fast_path_protocol():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("backends", "teach") or rel.name == "engine.py":
            continue
        text = path.read_text()
        for m in FAST_PATH.finditer(text):
            if text[max(0, m.start() - 6):m.start()] == "engine":  # engine.greedy(...)
                continue
            found.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1} {m.group(0)}")
    assert not found, "fast-path methods called outside steerlab/engine.py:\n" + "\n".join(found)
    assert FAST_PATH.search("be.record(enc, 3)") and FAST_PATH.search("x.replaying(1, o)")
