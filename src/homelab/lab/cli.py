"""`lab`: boot the reference cluster (or any lab inventory) as systemd-nspawn nodes on this machine.

    lab up [INVENTORY]     boot one node per host of the inventory (default inventory/lab.py)
    lab down [--purge]     stop the nodes, remove the bridge, nft table and state (--purge: the base image too)
    lab status             node, address, state, ssh reachable
    lab ssh NAME [CMD...]  a shell or a command on a node
    lab recreate NAME [INVENTORY]   destroy one node and boot it empty again (as a replaced machine)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from homelab.lab import api, ssh
from homelab.lab.errors import LabError
from homelab.lab.settings import lab_settings

DEFAULT_INVENTORY = Path("inventory/lab.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.split("\n\n")[0].strip("`: "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="boot the inventory's nodes (keeps running ones)")
    up.add_argument("inventory", nargs="?", type=Path, default=DEFAULT_INVENTORY)
    down = commands.add_parser("down", help="stop the nodes and remove what `lab up` created")
    down.add_argument("--purge", action="store_true", help="also remove the cached base image")
    recreate = commands.add_parser("recreate", help="destroy one node and boot it empty (new host key)")
    recreate.add_argument("name")
    recreate.add_argument("inventory", nargs="?", type=Path, default=DEFAULT_INVENTORY)
    commands.add_parser("status", help="one line per node: address, state, ssh")
    shell = commands.add_parser("ssh", help="ssh to a node")
    shell.add_argument("name")
    shell.add_argument("remote_command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            api.up(args.inventory)
        elif args.command == "recreate":
            api.recreate(args.inventory, args.name)
        elif args.command == "down":
            api.down(purge=args.purge)
        elif args.command == "status":
            return print_status()
        elif args.command == "ssh":
            settings = lab_settings()
            if not settings.ssh_config.exists():
                raise LabError("the lab is not up: run lab up first")
            command = ssh.ssh_command(settings, args.name, *args.remote_command)
            os.execvp(command[0], command)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def print_status() -> int:
    rows = [(s.name, s.address, f"Debian {s.release}", s.state, "yes" if s.ssh else "no") for s in api.status()]
    if not rows:
        print("lab: no nodes (run lab up)")
        return 3
    header = ("NODE", "ADDRESS", "RELEASE", "STATE", "SSH")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    # Exit status tells scripts whether every node is usable.
    return 0 if all(state in ("running", "degraded") and reachable == "yes" for *_, state, reachable in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
