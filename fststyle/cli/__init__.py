"""The entry layer: what ``train.py`` and ``infer.py`` share (exit statuses, user errors, argument checks).

Exit statuses, the same for every job: 0 done, 1 some inputs failed (named in the log), 2 a user error
(one line that names the file or setting and the fix; nothing was written).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from fststyle.errors import UserError

log = logging.getLogger("fststyle")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USER_ERROR = 0, 1, 2
#: set to 1 to see the traceback of a user error as well (for bug reports)
TRACEBACK_ENV = "FSTSTYLE_TRACEBACK"


def report_user_error(error: BaseException) -> None:
    """Print ``error`` as the one line ``error: <message>`` on stderr (the message's lines joined)."""
    message = " ".join(str(error).split("\n")).strip() or type(error).__name__
    print(f"error: {message}", file=sys.stderr, flush=True)


def run_job(job: Callable[[], object]) -> None:
    """Run ``job`` and exit with its status (an int it returns; anything else is 0); a ``UserError`` or an OS error (missing file, permission,
    full disk) becomes one line on stderr and exit status 2. Other exceptions are bugs and propagate."""
    try:
        status = job()
    except (UserError, OSError) as error:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        report_user_error(error)
        raise SystemExit(EXIT_USER_ERROR) from None
    if isinstance(status, int) and status:  # hydra.main discards return values; SystemExit passes through it
        raise SystemExit(status)
