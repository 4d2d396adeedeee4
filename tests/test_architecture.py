"""The import rules of docs/architecture.md, read from the source with `ast`.

Every import statement counts, inside functions and `if TYPE_CHECKING:` blocks too, and rules about
what a part may reach are checked on the transitive closure of the project's own imports: a rule
broken through a helper module is broken.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "model", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def sources() -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """Every module `path` imports, absolute (a `from x import y` counts as x and, when it is a module, x.y)."""
    names: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in sources())
    return names


def is_package(module: str) -> bool:
    return sources()[module].name == "__init__.py"


def project_imports(module: str, parents: bool = True) -> set[str]:
    """The project modules `module` imports directly, with the packages above them (importing a.b.c runs a
    and a.b) unless `parents` is False."""
    found = set()
    for name in imported(sources()[module]):
        parts = name.split(".")
        chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        found.update(p for p in (chain if parents else chain[-1:]) if p in sources())
    return found - {module}


@cache
def reach(module: str, parents: bool = True) -> frozenset[str]:
    """Every project module that importing `module` may import, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for name in project_imports(todo.pop(), parents):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return frozenset(seen)  # `module` itself only when an import cycle leads back to it


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def modules_in(prefix: str) -> list[str]:
    return [m for m in sources() if within(m, prefix)]


def external(module: str) -> set[str]:
    """Top-level names of the non-project modules `module` imports directly."""
    return {name.split(".")[0] for name in imported(sources()[module])} - set(PACKAGES)


def test_the_rules_see_every_part():
    assert {"model.transformer", "model.search.greedy", "model.engine.backend", "model.text.compose",
            "model.training.data", "app.main"} <= set(sources())
    assert "model.search.backend" in reach("model.search.greedy") and "model.transformer" in reach("app.main")


@pytest.mark.parametrize("module", modules_in("model.text"))
def test_text_handling_imports_no_torch(module):
    reached = {module, *reach(module)}
    assert all(within(m, "model.text") or m == "model" for m in reached), sorted(reached)
    assert not any("torch" in external(m) for m in reached), f"{module} reaches torch"


def test_the_network_knows_neither_the_search_nor_the_engine():
    reached = reach("model.transformer")
    assert not [m for m in reached if within(m, "model.search") or within(m, "model.engine")], sorted(reached)


@pytest.mark.parametrize("module", modules_in("model"))
def test_the_model_never_imports_the_service_or_the_benchmarks(module):
    assert not [m for m in reach(module) if within(m, "app") or within(m, "bench")], module


@pytest.mark.parametrize("module", modules_in("app"))
def test_the_service_never_reaches_training(module):
    assert not [m for m in reach(module) if within(m, "model.training")], module


@pytest.mark.parametrize("module", modules_in("app") + modules_in("model"))
def test_nothing_shipped_imports_the_benchmarks(module):
    assert not [m for m in project_imports(module) if within(m, "bench")], module


@pytest.mark.parametrize("module", [m for m in modules_in("app") + modules_in("model") if not is_package(m)])
def test_no_module_imports_itself_back(module):
    """A cycle between modules (not a package importing its own submodules, which Python allows)."""
    assert module not in reach(module, parents=False)
