"""``python -m aep_local up|status|down|env`` (``bin/stack``): run the local services."""

from __future__ import annotations

import argparse
import logging
import sys

from aep_local.processes import StackError
from aep_local.stack import ServiceStatus, Stack


def _print_status(statuses: list[ServiceStatus]) -> int:
    for status in statuses:
        health = "healthy" if status.healthy else f"UNHEALTHY: {status.problem}"
        print(f"{status.name:<9} {status.address:<42} {health}  [{status.origin}]")
    return 0 if all(status.healthy for status in statuses) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/stack", description=__doc__)
    parser.add_argument(
        "command",
        choices=("up", "status", "down", "env"),
        help="up: start what is not running; status: check each service (exit 1 when one is unhealthy); "
        "down: stop what the stack started; env: print export lines for eval",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    stack = Stack()
    try:
        if args.command == "up":
            return _print_status(stack.up())
        if args.command == "status":
            return _print_status(stack.status())
        if args.command == "down":
            print("\n".join(stack.down()))
            return 0
        print("\n".join(stack.env_lines()))
        return 0
    except StackError as exc:
        print(f"bin/stack {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
