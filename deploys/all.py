"""Everything, everywhere: `pyinfra -y inventory/<name>.py deploys/all.py` (run from the repo root).

Each host gets the roles homelab.topology assigns it: the base roles on every host, the others by
the inventory groups it is in (and, for the log_shipper group, the shipper its data chooses), in
the order of homelab.topology.ROLES. A bad settings file stops the run while operations are being
prepared, before any host is changed.

To apply only some roles: `--data only_roles=nginx,grafana`. A run that changed a host ends by
stamping it (roles.node_exporter.stamp_deploy), which `homelab status` shows as its last deploy.
"""

from importlib import import_module

from pyinfra import host

from homelab.topology import ROLES
from roles import fact_cache, pyinfra_prepare
from roles.common import current_topology
from roles.node_exporter import stamp_deploy

fact_cache.install()  # a converged node answers in a few round trips, not one per fact
pyinfra_prepare.install()  # planning an operation costs no stack introspection
pyinfra_prepare.hosts_run_independently()  # no host waits for the slowest at every operation

only = host.data.get("only_roles")
wanted = set(only.split(",")) if only else None
mine = set(current_topology().roles_of(host.name))

# pyinfra tells operations apart by the line numbers of their call stack alone, not the files: two
# roles' operations at the same lines would count as one, ordered differently on different hosts
# ("Cycle detected in operation ordering DAG": Alertmanager's config and pki's new key did). Every host
# walks all of ROLES in host.loop, so each operation also carries its role's place there, the same
# on every host.
with fact_cache.planning_reads_batched():  # what planning asks, read in one round trip
    for role in host.loop(ROLES):
        if role.name in mine and (wanted is None or role.name in wanted):
            import_module(f"roles.{role.name}").apply()

    # With TLS turned off, the node's key and certificates go once no service reads them any more.
    if "pki" in mine and (wanted is None or "pki" in wanted):
        import_module("roles.pki").remove_when_off()

    stamp_deploy()
