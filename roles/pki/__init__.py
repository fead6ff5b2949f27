"""The cluster's TLS switch and certificate settings (group data key `pki`).

The cluster CA lives on the control machine (homelab.pki); this role's settings say whether the
services on a host serve TLS with a login, and how long certificates live.
"""

from __future__ import annotations

from homelab.config import StrictModel


class Settings(StrictModel):
    """Group data key `pki`; set it in inventory/group_data/all.py so the whole cluster agrees."""

    # Whether this host's HTTP listeners that support it (homelab.topology.Listener.secured) serve
    # TLS with the cluster CA's certificate and ask for a login.
    tls: bool = False
