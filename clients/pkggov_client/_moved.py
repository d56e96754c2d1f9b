"""Commands that moved out of `pkggov`: each is kept as a hidden command that says where to.

`pkggov policy validate|test` and `pkggov audit verify` read the gateway's policy files and
audit store with the gateway's own code, so they ship with the gateway as `pkggov-admin`; the
client distribution holds no server code.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["EXIT_MOVED", "add_moved_command"]

EXIT_MOVED = 2
"""The exit status of a moved command (a usage error: the command is not here)."""


def add_moved_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, moved_to: str
) -> None:
    """Add a hidden command `name` that takes any arguments and says it moved to `moved_to`."""
    # No prefix characters: every argument, flags included, is taken as part of `rest`.
    parser = subparsers.add_parser(name, add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(args: argparse.Namespace) -> int:
        print(
            f"{parser.prog}: moved to `{moved_to}`, which is installed with the gateway "
            "(the pkggov distribution), not with pkggov-client",
            file=sys.stderr,
        )
        return EXIT_MOVED

    parser.set_defaults(func=run)
