"""alerts/thresholds.yaml -> Prometheus rule files and promtool unit tests (`alerts` command).

Each alert is one class in ``catalog``: its settings (the keys a user edits in thresholds.yaml),
its rules, and the promtool tests proving each rule fires above its threshold after ``for:``
and stays silent below it. ``compile`` writes them to alerts/generated/.
"""
