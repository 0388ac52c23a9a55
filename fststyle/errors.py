"""The one exception family for problems a user can fix: a bad path, file, model or setting.

The ``fststyle`` commands (and ``train.py``, ``infer.py``) print a ``UserError`` as one line and exit with status 2; every
other exception is a bug in fststyle and keeps its traceback. The message names the file or setting and
the fix.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence


class UserError(ValueError):
    """A problem with what the user handed us (path, file, model, setting); the message says how to fix it."""


class InputNotFoundError(UserError, FileNotFoundError):
    """An input file or folder named by the user does not exist (also a FileNotFoundError, as before)."""


def check_integer_setting(setting: str, value: object, low: int, high: int, meaning: str, default: int) -> int:
    """``value`` if it is an integer in ``low..high`` (not a bool), else a UserError naming ``setting``, what
    its numbers mean and its default."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{setting}={value!r} must be an integer from {low} to {high} ({meaning}); "
                        f"e.g. {setting}={default}, the default")
    return value


def require_extra(feature: str, modules: Sequence[str], extra: str) -> None:
    """A UserError naming ``pip install "fststyle[extra]"`` when any of ``modules`` cannot be imported:
    "``feature`` needs onnx and onnxscript, which are not installed: ..."."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise UserError(f"{feature} needs {' and '.join(missing)}, which {verb} not installed: "
                        f'pip install "fststyle[{extra}]"')


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) or SIGTERM after it said what it wrote; ``signal_number`` is the signal."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
