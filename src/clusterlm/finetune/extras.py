"""Optional dependencies of fine-tuning (the 'finetune' extra), imported only when used."""

from __future__ import annotations

import importlib
from types import ModuleType

from clusterlm.errors import UsageError


def require(module: str) -> ModuleType:
    """Import `module` (sklearn, sacrebleu) or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"this needs {module.split('.')[0]}: pip install 'clusterlm[finetune]'") from None
