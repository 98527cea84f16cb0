"""``docs/hooks.py`` (the MkDocs hook, not a package module) loaded once for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_NAME = "liquidref_docs_hooks"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, REPO / "docs" / "hooks.py")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module  # dataclasses look their module up while the class is built
    _spec.loader.exec_module(_module)
hooks = sys.modules[_NAME]
