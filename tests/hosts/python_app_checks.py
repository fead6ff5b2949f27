"""Lab checks every service installed by roles.python_app passes: its own user, its sandbox, its file limit."""

from __future__ import annotations

from roles.python_app import PythonApp


def main_pid(node, app: PythonApp) -> int:
    return int(node.check_output(f"systemctl show -p MainPID --value {app.service}"))


def check_runs_as_its_own_user(node, app: PythonApp) -> None:
    service = node.service(app.service)
    assert service.is_running and service.is_enabled
    assert node.check_output(f"ps -o user= -p {main_pid(node, app)}") == app.service
    assert node.user(app.service).shell == "/usr/sbin/nologin"


def check_sandboxed(node, app: PythonApp, writable: set[str], nofile: int) -> None:
    """Hardened unit, writable only in ``writable``, with the tuning file's open-file limit."""
    shown = dict(line.split("=", 1) for line in node.check_output(
        f"systemctl show {app.service} -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp "
        "-p ReadWritePaths -p Restart -p LimitNOFILE").splitlines())
    assert shown["NoNewPrivileges"] == "yes" and shown["ProtectSystem"] == "strict"
    assert shown["ProtectHome"] == "yes" and shown["PrivateTmp"] == "yes" and shown["Restart"] == "on-failure"
    assert set(shown["ReadWritePaths"].split()) == writable
    assert int(shown["LimitNOFILE"]) == nofile
    # The process gets it, unless the node's own PID 1 is held lower (a lab node on a host whose hard
    # limit is smaller; a real machine's systemd has 524288).
    ceiling = int(node.check_output("grep 'Max open files' /proc/1/limits").split()[4])
    limits = node.check_output(f"grep 'Max open files' /proc/{main_pid(node, app)}/limits").split()
    assert int(limits[3]) == min(nofile, ceiling)
