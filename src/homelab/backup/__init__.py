"""Backups of the cluster's state, taken from the control machine over SSH, and restores.

    homelab backup [--to DIR]          every part from every node into DIR/<UTC time>/ with a manifest
    homelab restore BACKUP [--node N]  check the manifest, then put the parts back and start the services
    homelab backup-timer [--install]   the systemd units that run backups on a schedule

What is copied and how: homelab.backup.parts. The folder and its manifest, retention and the
newest backup's time: homelab.backup.manifest (``newest_backup_time(directory)``, which
`homelab status` uses for the last backup's age). Settings: homelab.backup.settings (group data
`backup`). How Prometheus learns about failed or stale backups: homelab.backup.report. The
operator's guide: docs/backups.md.
"""

from homelab.backup.manifest import newest_backup_time

__all__ = ["newest_backup_time"]
