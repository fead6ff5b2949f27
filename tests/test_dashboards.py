"""Dashboards as code: well-formed, wired to the provisioned datasources, and querying only real metrics.

Each PromQL query's metric names are checked against what the exporters really serve: a live
node_exporter, toy-redis, nginx's stub_status exporter and mtail, started here on free loopback
ports. A dashboard whose exporter cannot run here is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from homelab.alerts.render import SLOS_FILE, THRESHOLDS_FILE, generated_files, load_slos, load_thresholds
from homelab.config import model_from_data
from roles import grafana
from roles.common import render

# File name -> JSON, as the grafana role provisions them (the SLO one generated from alerts/slos.yaml).
DASHBOARDS = grafana.dashboards()
# Which exporters serve the metrics each dashboard queries.
DASHBOARD_EXPORTERS = {
    "slo-error-budgets": ["slo_rules"],
    "toy-redis": ["toy_redis"],
    "node-overview": ["node_exporter"],
    "nginx": ["nginx_exporter", "mtail"],
}
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                   "bool", "offset", "inf", "nan"}


def load(name: str) -> dict:
    return json.loads(DASHBOARDS[name])


def stem(name: str) -> str:
    return name.removesuffix(".json")


def all_panels(dashboard: dict) -> list[dict]:
    """Panels, including those nested in collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: names before { or [ or standing bare.

    Function and aggregation names (followed by a parenthesis), keywords, label names and values,
    durations, numbers and Grafana's $variables are not metric names.
    """
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b(?:offset|@)\s*-?[\w.]+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if not call and name not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def variable_metric_names(query: str) -> set[str]:
    """Metric names in a Grafana template-variable query: label_values(metric, label) or a PromQL query."""
    label_values = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    if label_values:
        return promql_metric_names(label_values.group(1))
    return promql_metric_names(query) if not query.strip().startswith("label_values(") else set()


def dashboard_prometheus_names(dashboard: dict) -> set[str]:
    names = set()
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if (target.get("datasource") or panel.get("datasource") or {}).get("type") == "prometheus":
                names |= promql_metric_names(target["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and variable["datasource"]["type"] == "prometheus":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            names |= variable_metric_names(query)
    return names


@pytest.mark.parametrize(
    "expr, names",
    [
        ('sum by (command) (rate(toy_redis_commands_total{instance=~"$instance"}[$__rate_interval]))',
         {"toy_redis_commands_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m])))", {"x_seconds_bucket"}),
        ('node_load1 / on (instance) count by (instance) (node_cpu_seconds_total{mode="idle"})',
         {"node_load1", "node_cpu_seconds_total"}),
        ('1 - a{l="{not_a_metric}"} / b offset 5m unless on (x) group_left (y) c', {"a", "b", "c"}),
        ("sum(rate(a[1h:5m])) without (job) > bool 1e3", {"a"}),
        ("max_over_time(up[${__range}]) and ignoring(job) vector(1)", {"up"}),
    ],
)
def test_promql_metric_names_are_read_robustly(expr, names):
    assert promql_metric_names(expr) == names


def test_variable_queries_name_only_the_metric():
    assert variable_metric_names("label_values(toy_redis_keys, instance)") == {"toy_redis_keys"}
    assert variable_metric_names('label_values(node_uname_info{job="node"}, instance)') == {"node_uname_info"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=stem)
def test_dashboard_is_valid_json_with_unique_panel_ids(path):
    dashboard = load(path)
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path}"
    assert dashboard["uid"] and dashboard["title"]
    for panel in all_panels(dashboard):
        if panel["type"] != "row":
            assert panel.get("targets"), f"{path}: panel {panel['title']!r} has no query"


def test_dashboard_uids_and_titles_are_unique():
    dashboards = [load(path) for path in DASHBOARDS]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)
    assert {stem(path) for path in DASHBOARDS} == set(DASHBOARD_EXPORTERS), \
        "every dashboard needs an entry in DASHBOARD_EXPORTERS so its metrics are checked"


def test_panels_use_only_provisioned_datasources():
    sources = [grafana.Datasource(url) for url in ("http://a", "http://b", "http://c")]
    provisioned = {(s["type"], s["uid"]) for s in yaml.safe_load(grafana.render_datasources(*sources))["datasources"]}
    for path in DASHBOARDS:
        for panel in all_panels(load(path)):
            for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if ref:
                    assert (ref["type"], ref["uid"]) in provisioned, f"{path}: {panel['title']!r} uses {ref}"


def test_toy_redis_dashboard_covers_what_operators_watch():
    dashboard = load("toy-redis.json")
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    text = "\n".join(exprs)
    for quantile in ("0.5", "0.9", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in text
    assert "sum by (command) (rate(toy_redis_commands_total" in text
    for metric in ("toy_redis_keys{", "toy_redis_keys_with_ttl", "toy_redis_expired_keys_total",
                   "toy_redis_connected_clients", "toy_redis_event_loop_lag_seconds", "process_resident_memory_bytes"):
        assert metric in text
    [logs] = [p for p in all_panels(dashboard) if p["type"] == "logs"]
    assert logs["datasource"]["type"] == "loki"


def test_logs_panel_selects_the_labels_the_log_shippers_set():
    from roles import alloy, promtail

    dashboard = load("toy-redis.json")
    [logs] = [p for p in all_panels(dashboard) if p["type"] == "logs"]
    selector = re.match(r"\{([^}]*)\}", logs["targets"][0]["expr"]).group(1)
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', selector))
    pinned = {"install": {"version": "3.5.0"}}
    promtail_settings = model_from_data("group data", promtail.Settings, pinned)
    promtail_config = yaml.safe_load(promtail.render_config(promtail_settings, "worker-node-12", "http://loki:3100"))
    static = promtail_config["scrape_configs"][0]["static_configs"][0]["labels"]
    assert {k: static.get(k) for k in wanted} == wanted
    alloy_settings = model_from_data("group data", alloy.Settings, {"install": {"version": "1.8.3"}})
    alloy_config = alloy.render_config(alloy_settings, "worker-node-12", "http://loki:3100")
    for key, value in wanted.items():
        assert re.search(rf'"{key}"\s*=\s*"{re.escape(value)}"', alloy_config), f"alloy sets no {key}={value!r}"


# --- live exporters ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape_when_up(url: str, process: subprocess.Popen, must_contain: str = "", timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited with {process.returncode} before serving {url}")
        try:
            response = requests.get(url, timeout=2)
            if response.ok and must_contain in response.text:
                return response.text
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not serve metrics{' with ' + must_contain if must_contain else ''} in {timeout}s")


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def exposed(text: str) -> tuple[dict[str, str], set[str]]:
    """(metric name -> TYPE, sample names) of a Prometheus text exposition."""
    types, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[^{\s]+", line).group())
    return types, samples


def is_served(name: str, types: dict[str, str], samples: set[str]) -> bool:
    if name in types or name in samples:
        return True
    for suffix, kinds in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                          ("_count", {"histogram", "summary"})):
        if name.endswith(suffix) and types.get(name.removesuffix(suffix)) in kinds:
            return True
    return False


@pytest.fixture(scope="module")
def node_exporter_metrics():
    binary = shutil.which("prometheus-node-exporter")
    if not binary:
        pytest.skip("needs Debian's prometheus-node-exporter (./dev setup installs it)")
    port = free_port()
    process = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield scrape_when_up(f"http://127.0.0.1:{port}/metrics", process, "node_cpu_seconds_total")
    finally:
        stop(process)


@pytest.fixture(scope="module")
def toy_redis_metrics(tmp_path_factory):
    if importlib.util.find_spec("toy_redis.__main__") is None:
        pytest.skip("toy-redis cannot be started yet (no toy_redis.__main__ in src/toy_redis)")
    import redis

    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("toy-redis") / "toy-redis.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "toy_redis", "--bind", "127.0.0.1", "--port", str(port),
         "--metrics-port", str(metrics_port), "--log-file", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        scrape_when_up(f"http://127.0.0.1:{metrics_port}/metrics", process)
        # Commands fill the labelled series (per command, per error kind) the dashboard reads.
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        client.set("dashboards:probe", "1", px=50)
        client.get("dashboards:probe")
        with pytest.raises(redis.ResponseError):
            client.execute_command("NO-SUCH-COMMAND")
        client.close()
        yield scrape_when_up(f"http://127.0.0.1:{metrics_port}/metrics", process, "toy_redis_commands_total{")
    finally:
        stop(process)


@pytest.fixture(scope="module")
def nginx_exporter_metrics(tmp_path_factory):
    binary = shutil.which("prometheus-nginx-exporter")
    if not binary or not shutil.which("nginx"):
        pytest.skip("needs Debian's nginx and prometheus-nginx-exporter (the nginx role installs them on nodes)")
    folder = tmp_path_factory.mktemp("nginx")
    status_port, exporter_port = free_port(), free_port()
    (folder / "nginx.conf").write_text(
        f"daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{status_port}; location = /stub_status {{ stub_status; }} }} }}\n"
    )
    nginx = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf"), "-p", str(folder)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The exporter gives up at start if stub_status does not answer yet.
    scrape_when_up(f"http://127.0.0.1:{status_port}/stub_status", nginx, "Active connections")
    exporter = subprocess.Popen(
        [binary, f"-nginx.scrape-uri=http://127.0.0.1:{status_port}/stub_status",
         f"-web.listen-address=127.0.0.1:{exporter_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield scrape_when_up(f"http://127.0.0.1:{exporter_port}/metrics", exporter, "nginx_connections_active")
    finally:
        stop(exporter, nginx)


@pytest.fixture(scope="module")
def mtail_metrics(tmp_path_factory):
    binary = shutil.which("mtail")
    if not binary:
        pytest.skip("needs Debian's mtail (./dev setup installs it)")
    folder = tmp_path_factory.mktemp("mtail")
    (folder / "progs").mkdir()
    (folder / "progs" / "nginx-responses.mtail").write_text(render("nginx/responses.mtail.j2"))
    access_log = folder / "access.log"
    access_log.write_text("")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--progs", str(folder / "progs"), "--logs", str(access_log), "--address", "127.0.0.1",
         "--port", str(port), "--logtostderr"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        scrape_when_up(f"http://127.0.0.1:{port}/metrics", process)
        with access_log.open("a") as log:
            log.write('127.0.0.1 - - [25/Nov/2026:12:00:00 +0000] "GET / HTTP/1.1" status=200 bytes=1 rt=0.001 urt=- "-" "t"\n')
        yield scrape_when_up(f"http://127.0.0.1:{port}/metrics", process, "nginx_http_responses_total")
    finally:
        stop(process)


@pytest.fixture(scope="module")
def slo_rules_metrics():
    """The series the SLO recording rules write, as an exposition: what the SLO dashboard may read."""
    rules = yaml.safe_load(generated_files(load_thresholds(THRESHOLDS_FILE), load_slos(SLOS_FILE))["slos.rules.yml"])
    return "".join(f"# TYPE {rule['record']} gauge\n" for group in rules["groups"] for rule in group["rules"]
                   if "record" in rule)


EXPORTER_FIXTURES = {
    "slo_rules": "slo_rules_metrics",
    "toy_redis": "toy_redis_metrics",
    "node_exporter": "node_exporter_metrics",
    "nginx_exporter": "nginx_exporter_metrics",
    "mtail": "mtail_metrics",
}


@pytest.mark.parametrize("path", DASHBOARDS, ids=stem)
def test_every_queried_metric_is_served_by_a_live_exporter(path, request):
    types, samples = {}, set()
    for exporter in DASHBOARD_EXPORTERS[stem(path)]:
        more_types, more_samples = exposed(request.getfixturevalue(EXPORTER_FIXTURES[exporter]))
        types.update(more_types)
        samples |= more_samples
    names = dashboard_prometheus_names(load(path))
    assert names, f"{path} queries no Prometheus metric"
    unknown = sorted(name for name in names if not is_served(name, types, samples))
    assert not unknown, f"{path} queries metrics no exporter serves: {unknown}"


def test_a_misspelt_metric_or_a_suffix_on_a_non_histogram_is_caught(node_exporter_metrics):
    types, samples = exposed(node_exporter_metrics)
    assert is_served("node_cpu_seconds_total", types, samples)
    assert not is_served("node_cpu_second_total", types, samples)
    assert not is_served("node_load1_bucket", types, samples)
    assert is_served("go_gc_duration_seconds_count", types, samples)  # a summary's count
