"""The local lab: systemd-nspawn nodes that stand in for the reference cluster on one machine."""
