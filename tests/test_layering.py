"""The package's layers look down only, and no module imports another module's private
names: checked on the import graph of every module under src/atrous and benchmarks/
(read with ``ast``, imports inside functions included; nothing is imported).

The table below is the architecture (docs/architecture.md shows it): a module belongs to
the layer of the longest prefix naming it, and may import only the layers listed for it.
A new package under src/atrous must be given a layer here.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
BENCHMARKS = ROOT / "benchmarks"

#: layer -> the module prefixes it holds
LAYERS: dict[str, tuple[str, ...]] = {
    "core": ("atrous.core",),
    # a leaf table of GPU targets and their resource limits, which the kernels' Spaces read
    "gputargets": ("atrous.gpucheck.targets",),
    "kernels": ("atrous.kernels",),
    "autotune": ("atrous.autotune",),
    "calls": ("atrous.api", "atrous.dispatch", "atrous.prepared", "atrous.plain_conv",
              "atrous.weight_cache"),
    "deeplab": ("atrous.deeplab",),
    "report": ("atrous.report",),
    "jobs": ("atrous.jobs",),
    "gpucheck": ("atrous.gpucheck",),
    "fleet": ("atrous.fleet",),
    "torch": ("atrous.torch",),
    "keras": ("atrous.keras",),
    "cli": ("atrous.cli",),
    "public": ("atrous",),  # atrous/__init__.py only: the public API, re-exported
    "benchmarks": ("benchmarks",),
}

_CALLS = {"core", "gputargets", "kernels", "autotune", "calls"}
_JOBS = _CALLS | {"deeplab", "public", "report", "jobs"}

#: layer -> the layers it may import (its own included)
MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core"},
    "gputargets": {"gputargets"},
    "kernels": {"core", "gputargets", "kernels"},
    "autotune": {"core", "autotune"},
    "calls": set(_CALLS),
    "deeplab": {"core", "gputargets", "kernels", "calls", "deeplab"},
    "report": {"core", "autotune", "report"},
    "jobs": set(_JOBS),
    "gpucheck": _JOBS | {"gpucheck"},
    "fleet": _JOBS | {"fleet"},
    # report: atrous.torch.convert reads the stored benchmark rows (atrous.report.evidence)
    "torch": {"core", "calls", "deeplab", "public", "report", "torch"},
    "keras": {"core", "calls", "deeplab", "public", "keras"},
    "cli": set(LAYERS) - {"benchmarks"},
    "public": {"core", "calls", "deeplab", "public"},
    # scripts over the public API (the package, its op contract in core, the torch
    # and keras integrations, the CLI's options) and the jobs only
    "benchmarks": {"public", "core", "jobs", "gpucheck", "gputargets", "report", "torch",
                   "keras", "cli", "benchmarks"},
}


def module_name(path: Path, base: Path) -> str:
    """The dotted name of ``path`` under ``base`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, str]:
    """Every module of src/atrous and benchmarks/ by name -> its source text (a fresh dict)."""
    return dict(_sources())


@functools.cache
def _sources() -> dict[str, str]:
    found = {module_name(p, SRC): p.read_text() for p in (SRC / "atrous").rglob("*.py")}
    found.update({module_name(p, ROOT): p.read_text() for p in BENCHMARKS.glob("*.py")})
    return found


def imports(name: str, source: str, known: Iterable[str]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) of every import in ``source`` (module
    ``name``), wherever it is; ``from P import m`` names the module ``P.m`` when ``m`` is a
    module in ``known``."""
    known = set(known)
    package = name if name in _packages(known) else name.rpartition(".")[0]
    out = []
    for node in _walk(source):
        if isinstance(node, ast.Import):
            out.extend((alias.name, "", node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, "", node.lineno) if sub in known
                           else (base, alias.name, node.lineno))
    return out


@functools.cache
def _walk(source: str) -> tuple[ast.AST, ...]:
    """Every node of ``source``'s syntax tree (parsed once per text)."""
    return tuple(ast.walk(ast.parse(source)))


def _packages(known: set[str]) -> set[str]:
    return {k.rpartition(".")[0] for k in known if "." in k}


def layer_of(module: str) -> str | None:
    """The layer of the longest prefix naming ``module``; None for a module outside them."""
    best, size = None, -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            inside = module == prefix or (module.startswith(prefix + ".") and prefix != "atrous")
            if inside and len(prefix) > size:
                best, size = layer, len(prefix)
    return best


def violations(modules: Mapping[str, str]) -> list[str]:
    """Every import that breaks the table or reaches for a private name, as readable lines."""
    problems = []
    for name, source in sorted(modules.items()):
        mine = layer_of(name)
        if mine is None:
            problems.append(f"{name}: in no layer (add it to LAYERS in tests/test_layering.py)")
            continue
        local = name == "benchmarks" or name.startswith("benchmarks.")
        for target, attr, line in imports(name, source, modules):
            first = target.split(".")[0]
            if local and target in {m.split(".", 1)[1] for m in modules
                                    if m.startswith("benchmarks.")}:
                target = f"benchmarks.{target}"  # a script's helper next to it
            elif first != "atrous":
                continue  # the standard library and third-party packages
            theirs = layer_of(target)
            if theirs is None or theirs not in MAY_IMPORT[mine]:
                problems.append(f"{name}:{line}: layer {mine!r} imports {target}"
                                f" (layer {theirs!r}); {mine!r} may import"
                                f" {sorted(MAY_IMPORT[mine])}")
            private = [p for p in (*target.split(".")[1:], attr) if p.startswith("_")
                       and not (p.startswith("__") and p.endswith("__"))]
            if private and target != name and first == "atrous":
                problems.append(f"{name}:{line}: imports the private {target}"
                                f"{'.' + attr if attr else ''} of another module")
    return problems


# ------------------------------------------------------------------------------ the tests


def test_every_module_has_a_layer_and_imports_only_down():
    problems = violations(sources())
    assert not problems, "\n".join(problems)


def test_the_table_itself_looks_down_only():
    # No two layers may import each other: the table is a partial order.
    for a, allowed in MAY_IMPORT.items():
        for b in allowed - {a}:
            assert a not in MAY_IMPORT[b] or b == a, f"{a} and {b} import each other"


def test_the_layers_hold_real_modules():
    names = sources()
    for layer in ("core", "kernels", "autotune", "calls", "report", "jobs", "cli", "public"):
        assert any(layer_of(n) == layer for n in names), layer


@pytest.mark.parametrize("module,source,expected", [
    # an upward import at module level
    ("atrous.kernels.synthetic", "from atrous.jobs.bench import bench\n", "layer 'kernels'"),
    # one hidden inside a function
    ("atrous.core.synthetic", "def f():\n    from atrous.autotune import lookup\n",
     "imports atrous.autotune.lookup"),
    # machinery reaching for the jobs
    ("atrous.autotune.synthetic", "import atrous.jobs.suite\n", "layer 'autotune'"),
    # reports that measure
    ("atrous.report.synthetic", "from atrous.jobs import ceilings\n", "layer 'report'"),
    # a relative import is resolved like any other
    ("atrous.kernels.gap.synthetic", "from ...dispatch import run\n", "atrous.dispatch"),
    # a private name of another module
    ("atrous.jobs.synthetic", "from atrous.dispatch import _main\n", "private"),
    # a benchmark script past the public API
    ("benchmarks.synthetic", "from atrous.autotune.candidate import Call\n",
     "layer 'benchmarks'"),
    ("benchmarks.synthetic", "import atrous.dispatch\n", "layer 'benchmarks'"),
    # a package nobody placed
    ("atrous.elsewhere", "import numpy\n", "in no layer"),
])
def test_an_added_bad_import_fails(module, source, expected):
    modules = sources()
    assert not violations(modules)
    modules[module] = source
    found = violations(modules)
    assert found and any(expected in line and module in line for line in found), found


def test_a_downward_import_passes():
    modules = sources()
    modules["atrous.jobs.synthetic"] = ("from atrous.core.registry import op\n"
                                       "from atrous.kernels.gap import spec\n"
                                       "def f():\n    from atrous.report import render\n")
    assert not violations(modules)


def _edits_sys_path(source: str) -> bool:
    """Whether ``source`` changes ``sys.path`` (``sys.path.insert/append/extend`` or an
    assignment to it)."""
    for node in _walk(source):
        target = node.func.value if isinstance(node, ast.Call) and isinstance(
            node.func, ast.Attribute) else None
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
        if (isinstance(target, ast.Attribute) and target.attr == "path"
                and isinstance(target.value, ast.Name) and target.value.id == "sys"):
            return True
    return False


def test_benchmarks_and_the_package_leave_sys_path_alone():
    edits = [name for name, source in sources().items() if _edits_sys_path(source)]
    assert not edits, edits
    assert _edits_sys_path("import sys\nsys.path.insert(0, 'src')\n")
    assert _edits_sys_path("import sys\nsys.path += ['src']\n")
    assert not _edits_sys_path("import sys\nprint(sys.path)\n")
