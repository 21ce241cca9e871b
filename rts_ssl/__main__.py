"""``python -m rts_ssl <command> [hydra overrides]``: dispatch only.

The command's module runs as ``__main__`` (``python -m rts_ssl.commands.<command>``), so
Lightning re-launches DDP workers with that module and the same overrides."""

from __future__ import annotations

import runpy
import sys

from rts_ssl.commands import COMMANDS, overrides_of

USAGE = "usage: python -m rts_ssl <command> [key=value ...]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {text}" for name, text in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return
    command, arguments = argv[0], list(argv[1:])
    if command not in COMMANDS:
        sys.exit(f"error: unknown command {command!r}\n\n{USAGE}")
    sys.argv = [f"rts_ssl {command}", *overrides_of(command, arguments)]
    runpy.run_module(f"rts_ssl.commands.{command}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
