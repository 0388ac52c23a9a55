"""The entry layer: what every ``fststyle`` command shares (exit statuses, user errors, argument checks).

Exit statuses, the same for every job: 0 done, 1 some inputs failed (named in the log), 2 a user error
(one line that names the file or setting and the fix).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fststyle.errors import RunInterrupted, UserError

EXIT_OK, EXIT_SOME_FAILED, EXIT_USER_ERROR = 0, 1, 2
#: set to 1 to see the traceback of a user error as well (for bug reports)
TRACEBACK_ENV = "FSTSTYLE_TRACEBACK"


def report_user_error(error: BaseException) -> None:
    """Print ``error`` as the one line ``error: <message>`` on stderr (the message's lines joined)."""
    message = " ".join(str(error).split("\n")).strip() or type(error).__name__
    print(f"error: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Turn a ``UserError`` or an OS error (missing file, permission, full disk) raised inside into one
    line on stderr and exit status 2. Other exceptions are bugs and propagate with their traceback."""
    try:
        yield
    except (UserError, OSError) as error:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        report_user_error(error)
        raise SystemExit(EXIT_USER_ERROR) from None


def run_job(job: Callable[[], object]) -> None:
    """Run ``job`` and exit with its status (an int it returns; anything else is 0), user errors as exit 2, a run
    that stopped on a signal after saying so (RunInterrupted) as 128 + the signal's number, the shell's way."""
    try:
        with user_errors_exit():
            status = job()
    except RunInterrupted as stop:
        raise SystemExit(128 + stop.signal_number) from None
    if isinstance(status, int) and status:  # hydra.main discards return values; SystemExit passes through it
        raise SystemExit(status)


def command_line(argv: Sequence[str], config_dir: Path, default_config: str) -> list[str]:
    """``argv`` ready for Hydra (path values quoted), after checking every override; exit 2 on a bad one."""
    from fststyle.cli.arguments import prepare_command_line

    with user_errors_exit():
        return prepare_command_line(argv, config_dir, default_config)
