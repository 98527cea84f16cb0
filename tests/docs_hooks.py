"""The scripts of ``docs/`` (the MkDocs hook and the verification page's catalogue, not package
modules), each loaded once for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def _load(filename: str, name: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "docs" / filename)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


hooks = _load("hooks.py", "liquidref_docs_hooks")
verification_catalog = _load("verification_catalog.py", "liquidref_verification_catalog")
