"""Settings shared by every host, in inventory/homelab.py and inventory/lab.py alike.

Each role reads the key named after it (roles/<role>/__init__.py, class Settings, lists the keys
and their defaults); set only what differs from the defaults. Besides those, `tuning_file`
(default inventory/tuning.yaml: kernel, file-limit and nginx socket tuning) and `thresholds_file`
(default alerts/thresholds.yaml: the prometheus role refuses rules not rendered from it), and
`backup` (homelab.backup.settings: where `homelab backup` writes on the control machine, retention,
schedule; the same for every host, so set it here only).
"""
