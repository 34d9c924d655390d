"""Which source files decide a kernel's behaviour, for the stale-record hash
(``atrous.autotune.lookup.source_hash``).

The set is the op's spec and backend module plus every module of ``atrous.kernels`` they
import, directly or through each other (the code generator, argument checks, the CPU task
engine, thread helpers, weight packing, the Winograd and GEMM variants, ...), found by
reading their ``import`` statements (nothing is imported, so no GPU stack is loaded). An
edit to any of them makes the records tuned before it stale.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PACKAGE = "atrous.kernels"


def _root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"cannot find the package {PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations)))


def _file(root: Path, module: str) -> Path | None:
    """The source file of ``module`` (a name under atrous.kernels), or None."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")[2:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if parts and candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Module names ``path`` (the source of ``module``) imports, anywhere in the file."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return names


def kernel_sources(package: str, backend_module: str) -> list[Path]:
    """The source files behind ``atrous.kernels.<package>.<backend_module>`` and its spec,
    sorted: those modules and every atrous.kernels module they import, transitively."""
    root = _root()
    todo = [f"{PACKAGE}.{package}.{backend_module}", f"{PACKAGE}.{package}.spec"]
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        path = _file(root, module)
        if module in seen or path is None:
            continue
        seen[module] = path
        todo.extend(_imports(path, module))
    if f"{PACKAGE}.{package}.{backend_module}" not in seen:
        raise ValueError(f"cannot find the source of {PACKAGE}.{package}.{backend_module}")
    return sorted(set(seen.values()))


def relative_name(path: Path) -> str:
    """``path`` relative to the atrous.kernels folder, with ``/`` (the same on every OS)."""
    return path.relative_to(_root()).as_posix()
