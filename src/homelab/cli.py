"""`homelab`: day-2 work on the cluster from the control machine, one subcommand group per area.

    homelab image build [NAME...] [--no-cache]   build the service images (default: all)
    homelab image save -o DIR [NAME...]          write each to DIR/NAME-VERSION.tar for `docker load`
    homelab maintenance start NODE... --for 30m --reason TEXT   silence the nodes' alerts meanwhile
    homelab maintenance list                     windows not yet over
    homelab maintenance end NODE...              lift the nodes' windows now
    homelab status [--json]                      every node and service: up, version, last deploy, budget, firing,
                                                 last backup (exit 1: not all well; SSH when Prometheus is down)
    homelab pki init                             once per cluster: the CA and the web passwords, into the vault
    homelab pki new-ca                           replace the CA (the old one stays trusted until drop-old-ca)
    homelab pki drop-old-ca                      after a deploy reissued every node's certificate
    homelab upgrade NODE                         Debian 12 -> 13 in place: silence, upgrade, reboot, deploy, check
    homelab profile NODE SERVICE [--seconds 30] [--rate 100] [--native] [--idle] [--memory]
                                                 where toy-redis or the alert relay spends CPU time (py-spy):
                                                 a flame graph SVG and a speedscope file, top functions printed;
                                                 --memory: the service's top allocating lines (tracemalloc)
    homelab backup [--to DIR]                    copy every service's state from the nodes into a dated folder
    homelab restore BACKUP [--node NODE]         check a backup's manifest, put it back, start the services
    homelab backup-timer [--install]             systemd units running `homelab backup` on a schedule

Images are built in the Docker engine that DOCKER_HOST names (the docker CLI's default socket
otherwise). A new area adds its own subparser in `main` and a module that does the work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from homelab.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homelab", description=__doc__.split("\n\n")[0].strip("`: "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    areas = parser.add_subparsers(dest="area", required=True)

    image = areas.add_parser("image", help="OCI images of toy-redis and alert-relay")
    image_commands = image.add_subparsers(dest="command", required=True)
    build = image_commands.add_parser("build", help="build images from the wheels the nodes get")
    build.add_argument("names", nargs="*", metavar="NAME", help="toy-redis, alert-relay (default: both)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer (the result is the same)")
    build.set_defaults(run=image_build)
    save = image_commands.add_parser("save", help="write built images to tarballs (docker load reads them)")
    save.add_argument("names", nargs="*", metavar="NAME", help="toy-redis, alert-relay (default: both)")
    save.add_argument("-o", "--output-dir", type=Path, required=True, metavar="DIR")
    save.set_defaults(run=image_save)

    add_maintenance(areas)
    status = _command(areas, "status", "every node and service: up or down, version, last deploy, error budget "
                                       "left, alerts firing, maintenance, last backup; exit status 1 when anything "
                                       "is down, firing or unreachable (nodes are asked over SSH when Prometheus is down)",
                      "homelab status --json", show_status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts instead of the table")
    upgrade = _command(areas, "upgrade", "upgrade a node from Debian 12 to 13 in place (docs/upgrade-debian13.md): "
                                         "its alerts silenced, apt full-upgrade, reboot, deploy, wait until its "
                                         "services are scraped as up, silence lifted",
                       "homelab upgrade worker-node-12 --inventory inventory/homelab.py", upgrade_node)
    upgrade.add_argument("node", metavar="NODE", help="inventory host name")

    add_pki(areas)
    add_profile(areas)
    add_backup(areas)

    args = parser.parse_args(argv)
    from homelab.backup.manifest import BackupError
    from homelab.backup.remote import RemoteError
    from homelab.maintenance import CommandError

    try:
        return args.run(args)
    except (ConfigError, CommandError, BackupError, RemoteError) as exc:
        print(f"homelab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def docker_client():
    import docker

    try:
        return docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        raise ConfigError("DOCKER_HOST", "", f"cannot reach a Docker engine ({exc}); start dockerd or set "
                                             "DOCKER_HOST") from None


def _names(args: argparse.Namespace) -> list[str]:
    from homelab.containers import images

    return [images.spec_named(name).name for name in args.names] or list(images.specs())


def image_build(args: argparse.Namespace) -> int:
    from homelab.containers import images

    names = _names(args)
    client = docker_client()
    for name in names:
        spec = images.spec_named(name)
        image = images.build(client, spec, no_cache=args.no_cache, log=lambda line: print(f"homelab: {line}"))
        print(f"{spec.tag} {image.id} {image.attrs['Size'] / 2**20:.0f} MiB")
    return 0


def image_save(args: argparse.Namespace) -> int:
    from homelab.containers import images

    client = docker_client()
    for name in _names(args):
        print(f"{images.save(client, name, args.output_dir)}: {images.spec_named(name).tag}")
    return 0


def _command(commands, name: str, help_text: str, example: str, run) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_argument("--inventory", type=Path, default=LAB_INVENTORY,
                         help="the cluster's inventory, which says where Prometheus and Alertmanager are "
                              "(default: the lab's)")
    command.set_defaults(run=run)
    return command


def add_maintenance(areas) -> None:
    maintenance = areas.add_parser("maintenance", help="maintenance windows: silence nodes' alerts while they are worked on",
                                   description="Maintenance windows are Alertmanager silences on the nodes' "
                                               "instances and on services that run only on them.")
    commands = maintenance.add_subparsers(dest="command", required=True)
    start = _command(commands, "start", "silence the nodes' alerts for a while",
                     "homelab maintenance start worker-node-12 --for 30m --reason 'kernel upgrade'",
                     maintenance_start)
    start.add_argument("nodes", nargs="+", metavar="NODE", help="inventory host names")
    start.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                       help="how long: 30m, 2h, 1d (at most 7d); a window already on a node is replaced")
    start.add_argument("--reason", required=True, help="why, shown in `maintenance list` and on the silences")
    _command(commands, "list", "the windows not yet over", "homelab maintenance list", maintenance_list)
    end = _command(commands, "end", "end the nodes' windows now (their alerts notify again)",
                   "homelab maintenance end worker-node-12", maintenance_end)
    end.add_argument("nodes", nargs="+", metavar="NODE", help="inventory host names")


def _topology(args: argparse.Namespace):
    from homelab.topology import Topology

    return Topology.load(args.inventory)


def maintenance_start(args: argparse.Namespace) -> int:
    from homelab import maintenance

    ids, warning = maintenance.start(_topology(args), args.nodes, args.duration, args.reason)
    print(f"maintenance of {', '.join(args.nodes)} for {args.duration}: {len(ids)} silences")
    if warning:
        print(f"homelab: warning: {warning}", file=sys.stderr)
    return 0


def maintenance_list(args: argparse.Namespace) -> int:
    from homelab import maintenance

    found = maintenance.windows(_topology(args))
    print(maintenance.table(found) if found else "no maintenance windows")
    return 0


def maintenance_end(args: argparse.Namespace) -> int:
    from homelab import maintenance

    expired, warning = maintenance.end(_topology(args), args.nodes)
    print(f"maintenance of {', '.join(args.nodes)} ended: {len(expired)} silences expired")
    if warning:
        print(f"homelab: warning: {warning}", file=sys.stderr)
    return 0


def add_pki(areas) -> None:
    pki = areas.add_parser("pki", help="the cluster's certificate authority and web passwords (homelab.pki)",
                           description="The CA's key and the web passwords live in the cluster's vault; the CA "
                                       "certificate beside it. A deploy issues and rotates node certificates.")
    commands = pki.add_subparsers(dest="command", required=True)
    _command(commands, "init", "create the CA and any missing web password (never replaces one)",
             "homelab pki init --inventory inventory/homelab.py", pki_init)
    _command(commands, "new-ca", "replace the CA; the old one stays trusted until drop-old-ca",
             "homelab pki new-ca --inventory inventory/homelab.py", pki_new_ca)
    _command(commands, "drop-old-ca", "trust only the current CA (after a deploy reissued every node's certificate)",
             "homelab pki drop-old-ca --inventory inventory/homelab.py", pki_drop_old_ca)


def _cluster_vault(args: argparse.Namespace):
    """(topology, vault file, password file, pki settings) of the inventory's cluster (its first host's)."""
    topology = _topology(args)
    host = topology.hosts[0]
    vault_file, password_file = topology.data(host, "vault_file"), topology.data(host, "vault_password_file")
    if not vault_file or not password_file:
        raise ConfigError(f"inventory data for {host}", "vault_file" if not vault_file else "vault_password_file",
                          "required: the CA key and the web passwords are kept in the vault")
    return topology, vault_file, password_file, topology.settings(host, "pki")


def pki_init(args: argparse.Namespace) -> int:
    from homelab import pki
    from homelab.access import web_users
    from roles.pki import lifetime

    topology, vault_file, password_file, settings = _cluster_vault(args)
    created = pki.init(vault_file, password_file, web_users(topology), settings.ca_name, lifetime(settings.ca_lifetime))
    print(f"created: {', '.join(created)}" if created else "nothing to do: the CA and every web password exist")
    return 0


def pki_new_ca(args: argparse.Namespace) -> int:
    from homelab import pki
    from roles.pki import lifetime

    _, vault_file, password_file, settings = _cluster_vault(args)
    bundle = pki.new_ca(vault_file, password_file, settings.ca_name, lifetime(settings.ca_lifetime))
    print(f"new CA in {bundle} (the old one still trusted): deploy, then run homelab pki drop-old-ca")
    return 0


def pki_drop_old_ca(args: argparse.Namespace) -> int:
    from homelab import pki

    _, vault_file, _, _ = _cluster_vault(args)
    print(f"dropped {pki.drop_old_ca(vault_file)} old CA certificate(s); deploy to update the nodes' CA bundle")
    return 0


def upgrade_node(args: argparse.Namespace) -> int:
    from homelab import upgrade

    upgrade.upgrade(args.inventory, args.node)
    return 0


def add_profile(areas) -> None:
    from homelab.profiling import FORMATS, PROFILED_ROLES

    profile = _command(areas, "profile", "where a service on a node spends its CPU time: py-spy records it from "
                                         "outside the process; a flame graph SVG and a speedscope file come back",
                       "homelab profile worker-node-12 toy_redis --seconds 30", run_profile)
    profile.add_argument("node", metavar="NODE", help="inventory host name")
    profile.add_argument("service", metavar="SERVICE", help=", ".join(PROFILED_ROLES))
    profile.add_argument("--seconds", type=int, default=30, help="how long to record (default 30)")
    profile.add_argument("--rate", type=int, default=100, help="samples per second (default 100)")
    profile.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    profile.add_argument("--idle", action="store_true", help="include idle threads' samples (py-spy --idle)")
    profile.add_argument("--memory", action="store_true",
                         help="the service's allocations instead (tracemalloc, on for --seconds only): the lines "
                              "that grew most and hold most")
    profile.add_argument("--format", dest="formats", action="append", choices=FORMATS,
                         help="what to write (repeatable; default: svg and speedscope; pprof: a .pb.gz for go tool pprof, Pyroscope)")
    profile.add_argument("-o", "--output-dir", type=Path, default=Path("."), metavar="DIR",
                         help="where to write the files (default: here)")


def run_profile(args: argparse.Namespace) -> int:
    from homelab import profiling

    request = profiling.Request(args.node, args.service, args.seconds, args.rate, args.native, args.idle)
    if args.memory:
        written, summary = profiling.memory(_topology(args), request, args.output_dir)
    else:
        written, summary = profiling.cpu(_topology(args), request, args.formats or list(profiling.DEFAULT_FORMATS),
                                         args.output_dir)
    for path in written:
        print(path)
    print(summary)
    return 0


def show_status(args: argparse.Namespace) -> int:
    from homelab import status

    return status.show(_topology(args), args.json)


def add_backup(areas) -> None:
    backup = _command(areas, "backup", "copy every service's state from the live nodes into a dated folder with a "
                                       "manifest, then apply retention (docs/backups.md)",
                      "homelab backup --to /srv/backups", run_backup)
    backup.add_argument("--to", type=Path, metavar="DIR",
                        help="the backup directory (default: group data backup.directory)")
    restore = _command(areas, "restore", "check a backup's manifest, then put its data back on freshly deployed "
                                         "nodes (each service stopped meanwhile) and start them",
                       "homelab restore /var/backups/homelab-ops/2026-11-29T031500Z --node worker-node-12",
                       run_restore)
    restore.add_argument("backup", type=Path, metavar="BACKUP", help="a backup folder made by homelab backup")
    restore.add_argument("--node", metavar="NODE", help="restore only what was taken from this node")
    timer = _command(areas, "backup-timer", "print (or --install) the systemd service and timer that run "
                                            "homelab backup at group data backup.on_calendar",
                     "homelab backup-timer --install", backup_timer)
    timer.add_argument("--install", action="store_true",
                       help="write them to /etc/systemd/system and enable the timer if systemd runs here")


def _log(line: str) -> None:
    print(f"homelab: {line}", flush=True)


def run_backup(args: argparse.Namespace) -> int:
    import time
    from datetime import datetime, timezone

    from homelab.backup import manifest, report, run
    from homelab.backup.settings import backup_settings

    topology = _topology(args)
    directory = args.to or Path(backup_settings(topology).directory)
    started = time.monotonic()
    outcome, failure = None, None
    try:
        outcome = run.backup(topology, str(args.inventory), directory, _log)
    except Exception as exc:  # reported to Prometheus, then shown as the one-line error it is
        failure = exc
    metrics = report.render(datetime.now(timezone.utc), manifest.newest_backup_time(directory), failure is not None,
                            time.monotonic() - started, outcome.size if outcome else None)
    try:
        host, folder = report.destination(topology)
        with run.remotes(topology) as remote:
            report.publish(remote(host), folder, metrics)
    except Exception as exc:
        _log(f"warning: could not report the backup to Prometheus: {exc}")
    if failure is not None:
        raise failure
    for path in outcome.removed:
        _log(f"retention: removed {path}")
    print(f"{outcome.folder}: {len(outcome.manifest.parts)} parts, {len(outcome.manifest.files)} files, "
          f"{outcome.size / 2**20:.1f} MiB in {outcome.seconds:.1f}s"
          + (f"; skipped {len(outcome.manifest.skipped)} (see manifest.json)" if outcome.manifest.skipped else ""))
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from homelab.backup import run

    restored = run.restore(_topology(args), args.backup, args.node, _log)
    print(f"restored {len(restored)} parts from {args.backup}")
    return 0


def backup_timer(args: argparse.Namespace) -> int:
    from homelab.backup import timer
    from homelab.backup.settings import backup_settings

    settings = backup_settings(_topology(args))
    if args.install:
        for path in timer.install(settings, REPO, args.inventory):
            print(f"wrote {path}")
        if not timer.systemd_running():
            print("systemd does not run this machine: the timer is not enabled; use cron (docs/backups.md)")
        return 0
    for name, text in timer.units(settings, REPO, args.inventory).items():
        print(f"# {name}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
