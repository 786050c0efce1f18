"""setup.cfg declares a console script for every step, and each one points at a real main()."""
from __future__ import annotations

import configparser
import importlib
from pathlib import Path

from cdtools.steps import STEPS

REPO = Path(__file__).resolve().parent.parent


def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [line.strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    return dict((name.strip(), target.strip()) for name, target in (line.split("=", 1) for line in lines))


def test_every_step_has_a_console_script():
    scripts = console_scripts()
    assert {f"cdtools-{step.name}" for step in STEPS} | {"cdtools"} == set(scripts)


def test_every_console_script_points_at_a_callable_main():
    for name, target in console_scripts().items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_runtime_needs_nothing_but_the_standard_library():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options"]["install_requires"].strip() == ""


def test_runtime_code_imports_only_the_standard_library():
    import ast
    import sys

    stdlib = set(sys.stdlib_module_names)
    outside = []
    for path in sorted((REPO / "cdtools").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "cdtools" and top != "__future__":
                    outside.append(f"{path.name}: {name}")
    assert outside == []
