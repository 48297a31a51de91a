"""Layout: src/ installs as the single package `pfcon`, nothing generic at top level."""

from __future__ import annotations

import importlib.util
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_source_package_is_packaged_under_pfcon() -> None:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"pfcon": "src"}
    found = set()
    for dirpath, _, filenames in os.walk(os.path.join(ROOT, "src")):
        if "__init__.py" in filenames and "__pycache__" not in dirpath:
            rel = os.path.relpath(dirpath, os.path.join(ROOT, "src"))
            found.add("pfcon" if rel == "." else "pfcon." + rel.replace(os.sep, "."))
    assert found == set(setuptools["packages"])


def test_no_generic_top_level_modules() -> None:
    for name in ("domain", "adapters", "entrypoints", "bootstrap", "config"):
        assert importlib.util.find_spec(name) is None, name
    assert importlib.util.find_spec("pfcon.domain") is not None


def test_the_domain_uses_the_standard_library_only() -> None:
    import ast
    import sys

    allowed = set(sys.stdlib_module_names)
    for dirpath, _, filenames in os.walk(os.path.join(ROOT, "src", "domain")):
        for name in filenames:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(dirpath, name)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module or ""]
                else:
                    continue
                for module in modules:
                    assert module.split(".")[0] in allowed | {"__future__"}, f"{name}: {module}"
