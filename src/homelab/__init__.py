"""homelab-ops: control-machine code (lab tool, alert compiler, config validation, vault)."""
