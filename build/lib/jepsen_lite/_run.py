"""Running `ip` and `nft`, and the error tree (drawn in the package docstring). Stdlib only."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Final

__all__ = ["COMMAND_TIMEOUT_S", "Refused", "SandboxError", "run"]

#: No single `ip`/`nft` command may take longer than this.
COMMAND_TIMEOUT_S: Final = 20.0


class SandboxError(RuntimeError):
    """The sandbox cannot be built, or a command inside it failed; the message says which."""


class Refused(SandboxError):
    """This machine cannot host a sandbox; the message is a one-line reason."""


def run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Run ``argv``; its stdout. A non-zero exit raises SandboxError with the command and its
    stderr."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SandboxError(f"{' '.join(argv)}: {error}") from error
    if done.returncode != 0:
        detail = done.stderr.strip() or f"exit {done.returncode}"
        raise SandboxError(f"{' '.join(argv)}: {detail}")
    return done.stdout
