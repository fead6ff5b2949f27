"""Everything, everywhere: `pyinfra -y inventory/<name>.py deploys/all.py` (run from the repo root).

Every host gets the base roles; the other roles follow the inventory groups a host is in. A bad
settings file stops the run while operations are being prepared, before any host is changed.
"""

from pyinfra import host

from roles import node_exporter, tuning

BASE_ROLES = [tuning, node_exporter]

# inventory group -> role, in the order they are applied on a host
GROUP_ROLES = {}

for role in BASE_ROLES:
    role.apply()

for group, role in GROUP_ROLES.items():
    if group in host.groups:
        role.apply()
