"""Commands run in the test process, as the command line runs them (config, checks, one-line
errors and exit codes), without the seconds a new Python process spends importing torch."""

from __future__ import annotations

import io
import logging
import subprocess
from contextlib import redirect_stderr, redirect_stdout

from rts_ssl.commands import compose, execute


def run_command(command: str, *arguments: str) -> subprocess.CompletedProcess:
    """``python -m rts_ssl <command> <arguments>`` in-process: its exit code and output, log
    lines on stderr at INFO as Hydra's console logging writes them."""
    stdout, stderr = io.StringIO(), io.StringIO()
    root, handler = logging.getLogger(), logging.StreamHandler(stderr)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            code = execute(command, compose(command, list(arguments)))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess([command, *arguments], code, stdout.getvalue(),
                                       stderr.getvalue())
