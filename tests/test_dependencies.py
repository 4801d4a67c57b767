"""Every third-party module the controller imports is declared in pyproject.toml (dependencies or an
extra), so `pip install edgebench[...]` gives a working tool; the agent's own rule (stdlib + numpy + the
runtime) is checked in tests/test_agent_cli.py."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent


def _imported_top_level(folder: Path) -> dict[str, str]:
    """top-level module name -> first file importing it (relative to ``folder``), for every import."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(folder)))
    return found


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_every_third_party_import_of_the_controller_is_declared():
    dists = importlib.metadata.packages_distributions()
    declared = _declared()
    ours = {"agent", "controller", "models", "tests", "__future__"}
    missing = {}
    for module, where in _imported_top_level(REPO / "controller").items():
        if module in sys.stdlib_module_names or module in ours:
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = where
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_check_would_notice_an_undeclared_import(tmp_path):
    assert "requests" not in _declared()  # so a file importing it must be reported
    (tmp_path / "x.py").write_text("import requests\nfrom os import path\n")
    assert _imported_top_level(tmp_path) == {"requests": "x.py", "os": "x.py"}
