"""How the control machine runs a command on a node over SSH, with the inventory's SSH settings
(key, known hosts, port, user), in batch mode: no prompt ever waits for a person."""

from __future__ import annotations

from homelab.topology import Topology

# A node that has not answered the SSH handshake in this long is given up on.
SSH_TIMEOUT_S = 5


def ssh_argv(topology: Topology, host: str, script: str) -> list[str]:
    """The argv running ``script`` on ``host`` with the inventory's SSH settings."""
    return [*ssh_base(topology, host), script]


def ssh_base(topology: Topology, host: str, **options: object) -> list[str]:
    """`ssh`, its options from the inventory (plus ``options``) and the node's login: the argv
    before the remote command."""
    data = lambda key: topology.data(host, key)  # noqa: E731
    options = {"BatchMode": "yes", "ConnectTimeout": SSH_TIMEOUT_S, "LogLevel": "ERROR", **options}
    if data("ssh_key"):
        options.update(IdentityFile=data("ssh_key"), IdentitiesOnly="yes")
    if data("ssh_known_hosts_file"):
        options["UserKnownHostsFile"] = data("ssh_known_hosts_file")
    if data("ssh_strict_host_key_checking"):
        options["StrictHostKeyChecking"] = data("ssh_strict_host_key_checking")
    argv = ["ssh", *(f"-o{key}={value}" for key, value in options.items())]
    if data("ssh_port"):
        argv += ["-p", str(data("ssh_port"))]
    user = data("ssh_user")
    return [*argv, f"{user}@{topology.address(host)}" if user else topology.address(host)]
