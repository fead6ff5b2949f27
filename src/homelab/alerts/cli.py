"""`alerts check [FILE] [--slos FILE] [--maintenance FILE --inventory FILE]`, `alerts render [FILE] [--slos FILE] [--out DIR]`, `alerts test [DIR]`.

Exit status: 0 when all is well, 1 when promtool reports a failure, 2 for a bad thresholds, SLO or
maintenance file (one line on stderr naming the file and key).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from homelab.alerts.render import (
    GENERATED_DIR,
    MAINTENANCE_FILE,
    REPO,
    RULES_GLOB,
    TESTS_GLOB,
    SLOS_FILE,
    THRESHOLDS_FILE,
    generated_files,
    load_slos,
    load_thresholds,
    shown_path,
    write_generated,
)
from homelab.config import ConfigError


def check(args: argparse.Namespace) -> int:
    thresholds = load_thresholds(args.file)
    slos = load_slos(args.slos)
    print(f"{shown_path(args.file)}: OK, {len(thresholds.enabled())} alerts enabled")
    print(f"{shown_path(args.slos)}: OK, {len(slos.enabled())} objectives enabled")
    from homelab.topology import Topology
    from roles.alertmanager.maintenance_windows import load_windows

    # Its nodes must be the inventory's: checked against the one given (default: the lab's).
    windows = load_windows(args.maintenance, shown_path(args.maintenance), Topology.load(args.inventory))
    print(f"{shown_path(args.maintenance)}: OK, {len(windows)} recurring maintenance windows")
    return 0


def render(args: argparse.Namespace) -> int:
    thresholds = load_thresholds(args.file)
    for path in write_generated(generated_files(thresholds, load_slos(args.slos)), args.out):
        print(f"wrote {shown_path(path)}")
    return 0


def promtool_test(args: argparse.Namespace) -> int:
    promtool = shutil.which("promtool")
    if not promtool:
        print("promtool not found: install Debian's prometheus package (apt-get install prometheus)", file=sys.stderr)
        return 2
    rules = sorted(args.dir.glob(RULES_GLOB))
    tests = sorted(args.dir.glob(TESTS_GLOB))
    if not rules or not tests:
        print(f"{shown_path(args.dir)}: no rule files or tests: run `alerts render` first", file=sys.stderr)
        return 2
    for command in ([promtool, "check", "rules", *map(str, rules)], [promtool, "test", "rules", *map(str, tests)]):
        result = subprocess.run(command)
        if result.returncode != 0:
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alerts", description="Compile alerts/thresholds.yaml into tested Prometheus rules.")
    commands = parser.add_subparsers(dest="command", required=True)

    check_cmd = commands.add_parser("check", help="validate the thresholds file")
    check_cmd.add_argument("file", nargs="?", type=Path, default=THRESHOLDS_FILE)
    check_cmd.add_argument("--slos", type=Path, default=SLOS_FILE, help="SLO file (default alerts/slos.yaml)")
    check_cmd.add_argument("--maintenance", type=Path, default=MAINTENANCE_FILE,
                           help="recurring maintenance windows (default alerts/maintenance.yaml)")
    check_cmd.add_argument("--inventory", type=Path, default=REPO / "inventory" / "lab.py",
                           help="inventory whose hosts the windows may name (default: the lab's)")
    check_cmd.set_defaults(run=check)

    render_cmd = commands.add_parser("render", help="write rule files and promtool tests")
    render_cmd.add_argument("file", nargs="?", type=Path, default=THRESHOLDS_FILE)
    render_cmd.add_argument("--slos", type=Path, default=SLOS_FILE, help="SLO file (default alerts/slos.yaml)")
    render_cmd.add_argument("--out", type=Path, default=GENERATED_DIR, help="output folder (default alerts/generated)")
    render_cmd.set_defaults(run=render)

    test_cmd = commands.add_parser("test", help="promtool check rules and test rules on the generated files")
    test_cmd.add_argument("dir", nargs="?", type=Path, default=GENERATED_DIR)
    test_cmd.set_defaults(run=promtool_test)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
