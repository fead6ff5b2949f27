"""blackbox_exporter (roles/blackbox): its modules and what it probes, for inventory/homelab.py and lab.py alike.

Each probe checks `url` on every host of `group`, "{host}" standing for the host's address;
roles/prometheus scrapes them as job `blackbox` with instance labels naming the host.
The default modules are http_2xx and tcp_connect (roles/blackbox DEFAULT_MODULES).
"""

blackbox = {
    "probes": [
        # nginx's own health endpoint, and the HTTP latency alert's source (probe_duration_seconds).
        {"module": "http_2xx", "group": "nginx", "url": "http://{host}/healthz"},
        {"module": "http_2xx", "group": "prometheus", "url": "http://{host}:9090/-/healthy"},
        {"module": "http_2xx", "group": "alertmanager", "url": "http://{host}:9093/-/healthy"},
        {"module": "http_2xx", "group": "alert_relay", "url": "http://{host}:9095/healthz"},
        {"module": "http_2xx", "group": "loki", "url": "http://{host}:3100/ready"},
    ],
}
