"""Which source files decide a kernel's behaviour, for the stale-record hash
(``atrous.autotune.lookup.source_hash``).

The set starts from the op's ``source_modules(backend)`` (for a built-in op: its spec and
backend module) and adds every module of the same top-level package they import, directly
or through each other (for atrous: the code generator, argument checks, the CPU task
engine, thread helpers, weight packing, the Winograd and GEMM variants, ...), found by
reading their ``import`` statements (nothing is imported, so no GPU stack is loaded). An
edit to any of them makes the records tuned before it stale.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
from pathlib import Path


def _root(package: str) -> Path:
    """The folder of the top-level package ``package`` (for a single-file module: the
    folder holding it)."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin).parent
    raise ValueError(f"cannot find the package {package}")


def _file(root: Path, package: str, module: str) -> Path | None:
    """The source file of ``module`` (``package`` or a name under it), or None."""
    if module != package and not module.startswith(package + "."):
        return None
    if (root / f"{package}.py").is_file() and module == package:  # a single-file module
        return root / f"{package}.py"
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
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


def kernel_sources(modules: Iterable[str]) -> list[tuple[str, Path]]:
    """The source files behind ``modules``, sorted, as (name relative to their top-level
    package folder with ``/``, path): those modules and every module of the same top-level
    package they import, transitively. ValueError when one of ``modules`` has no source."""
    found: dict[Path, str] = {}
    for start in modules:
        package = start.partition(".")[0]
        root = _root(package)
        todo, seen = [start], set()
        while todo:
            module = todo.pop()
            path = _file(root, package, module)
            if module in seen or path is None:
                continue
            seen.add(module)
            found[path] = path.relative_to(root).as_posix()
            todo.extend(_imports(path, module))
        if start not in seen:
            raise ValueError(f"cannot find the source of {start}")
    return sorted(((name, path) for path, name in found.items()), key=lambda item: item[0])
