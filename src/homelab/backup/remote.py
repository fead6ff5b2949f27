"""Commands on a node over OpenSSH, with the access the inventory gives pyinfra.

The address, user, key, known_hosts file and host-key policy come from the host's inventory data
(``ssh_hostname``, ``ssh_user``, ``ssh_key``, ``ssh_known_hosts_file``,
``ssh_strict_host_key_checking``, ``ssh_port``), so the lab's nodes (homelab.lab.settings.lab_host)
and the real cluster are reached the same way a deploy reaches them. One master connection per
node is reused for the many small commands of a backup and closed by ``close``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from homelab.ssh import ssh_base
from homelab.topology import Topology

# Long enough for a tar of the largest part to start; a dead node fails in this time, not never.
CONNECT_TIMEOUT_S = 10
# A stalled transfer (node frozen mid-stream) is given up after this many seconds without traffic.
ALIVE_INTERVAL_S, ALIVE_COUNT = 15, 4
# A remote command that is not a transfer (systemctl, curl on loopback, sha256sum) ends within this.
COMMAND_TIMEOUT_S = 300


class RemoteError(RuntimeError):
    """A command on a node failed: one line naming the node, what was run, and its error output."""


class Remote:
    """One node, as the control machine reaches it over SSH."""

    def __init__(self, topology: Topology, host: str, control_dir: Path):
        self.host = host
        self._base = ssh_base(topology, host, ConnectTimeout=CONNECT_TIMEOUT_S, ServerAliveInterval=ALIVE_INTERVAL_S,
                              ServerAliveCountMax=ALIVE_COUNT, ControlMaster="auto",
                              ControlPath=str(control_dir / "%C"), ControlPersist=60)
        user = topology.data(host, "ssh_user")
        # Backups read and restores write files only root may: a non-root login goes through sudo.
        self._sudo = "" if user in (None, "root") else "sudo -n "

    def command(self, script: str) -> list[str]:
        """The ssh argv running ``script`` (a shell command line) on the node as root."""
        return [*self._base, self._sudo + "sh -c " + shlex.quote(script)]

    def run(self, script: str, input: bytes | None = None, timeout: float = COMMAND_TIMEOUT_S) -> bytes:
        """Run ``script`` on the node; its standard output. Fails with one line on a non-zero exit."""
        try:
            result = subprocess.run(self.command(script), input=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.host}: {_short(script)}: no answer in {timeout:.0f}s") from None
        if result.returncode != 0:
            raise RemoteError(f"{self.host}: {_short(script)}: {_last_line(result.stderr, result.returncode)}")
        return result.stdout

    def read_to(self, script: str, dest: Path) -> None:
        """Stream ``script``'s standard output into the local file ``dest`` (mode 0600: databases, secrets)."""
        with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out, \
                tempfile.TemporaryFile() as errors:
            result = subprocess.run(self.command(script), stdout=out, stderr=errors)
            if result.returncode != 0:
                errors.seek(0)
                raise RemoteError(f"{self.host}: {_short(script)}: {_last_line(errors.read(), result.returncode)}")

    def fetch_tree(self, folder: str, names: list[str], dest: Path) -> None:
        """Copy ``names`` (files or folders relative to the node's ``folder``) into local ``dest``."""
        dest.mkdir(parents=True, exist_ok=True)
        script = f"tar -C {shlex.quote(folder)} -cf - -- {' '.join(map(shlex.quote, names))}"
        self._pipe(self.command(script), ["tar", "-C", str(dest), "--no-same-owner", "-xf", "-"], _short(script))

    def send_tree(self, source: Path, folder: str) -> None:
        """Copy everything in local ``source`` into the node's ``folder`` (which must exist)."""
        self.run_with_tree(source, unpack_command(folder))

    def run_with_tree(self, source: Path | None, script: str, what: str | None = None) -> None:
        """Run ``script`` on the node with a tar of local ``source`` (an empty one for None) on its
        standard input; a failure is named ``what`` (default: the script) and its last error line."""
        reader = ["tar", "-C", str(source), "-cf", "-", "."] if source else ["tar", "-cf", "-", "-T", "/dev/null"]
        self._pipe(reader, self.command(script), what or _short(script))

    def _pipe(self, reader: list[str], writer: list[str], what: str) -> None:
        with tempfile.TemporaryFile() as read_errors, tempfile.TemporaryFile() as write_errors:
            first = subprocess.Popen(reader, stdout=subprocess.PIPE, stderr=read_errors)
            second = subprocess.Popen(writer, stdin=first.stdout, stderr=write_errors)
            first.stdout.close()  # the writer alone holds the pipe: it sees EOF when the reader ends
            second.wait()
            first.wait()
            for process, errors in ((first, read_errors), (second, write_errors)):
                if process.returncode != 0:
                    errors.seek(0)
                    raise RemoteError(f"{self.host}: {what}: {_last_line(errors.read(), process.returncode)}")

    def close(self) -> None:
        subprocess.run([*self._base[:-1], "-O", "exit", self._base[-1]], capture_output=True, timeout=10)


def unpack_command(folder: str) -> str:
    """Unpack a tar from standard input into the node's ``folder``, as root owns files restored there."""
    # Folders that exist keep their owner and mode (the archive's "./" would otherwise retag /).
    return f"tar -C {shlex.quote(folder)} --no-same-owner --no-overwrite-dir -xf -"


# Long scripts are clipped in error lines, so an error stays one readable line.
SCRIPT_SHOWN_CHARS = 100


def _short(script: str) -> str:
    return script if len(script) <= SCRIPT_SHOWN_CHARS else script[:SCRIPT_SHOWN_CHARS - 1] + "…"


def _last_line(stderr: bytes, returncode: int) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {returncode}"
