"""compose/: the scaled-out platform's files are valid and hang together.

With the Docker Compose plugin on the machine, ``docker compose config -q`` validates the file against
the Compose spec (no engine needed). Without it, that check says so and the structure checks below (always
run) stand alone: the topology (3 clustered NATS nodes, two replicas of every service, the agent, the
observability stack), every referenced file, the NATS configs (checked by the real nats-server), the
Prometheus, collector and Grafana configs, and the dashboard's PromQL.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from services.bus.streams import STREAM_NOT_FOUND
from services.platform.natsd import free_port, nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
PLATFORM_SERVICES = ("registry", "access", "lifecycle", "health", "api")
NATS_NODES = ("nats-1", "nats-2", "nats-3")

GAUGES = {"tether_clusters_connected", "tether_clusters_online", "tether_commands_pending"}
COUNTERS = {
    "tether_commands_issued_total",
    "tether_commands_applied_total",
    "tether_commands_failed_total",
    "tether_resyncs_total",
}
HISTOGRAMS = {"tether_heartbeat_lag_seconds", "tether_command_latency_seconds", "tether_api_request_duration_seconds"}
METRICS = GAUGES | COUNTERS | HISTOGRAMS
"""The metrics the services emit (Prometheus names, as the OTel Prometheus exporter writes them)."""
SERIES = GAUGES | COUNTERS | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}


# --- loading ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def command_of(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def image_of(service: dict[str, Any]) -> str:
    return str(service.get("image", ""))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every bind mount (a source starting with . or /)."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> named volume."""
    out = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2] if isinstance(volume, str) else (volume["source"], volume["target"])
        if not source.startswith((".", "/")):
            out[target] = source
    return out


def mounted_file(service: dict[str, Any], target: str) -> Path:
    for source, mount_target in bind_mounts(service):
        if mount_target == target:
            return (COMPOSE_DIR / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def by_image(services: dict[str, dict[str, Any]], prefix: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if image_of(s).startswith(prefix)}


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"compose_{name}", COMPOSE_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the Compose spec -------------------------------------------------------------------------------
def compose_cli() -> list[str] | None:
    """``docker compose`` when the plugin answers (no engine needed for ``config``), else None."""
    if shutil.which("docker") is None:
        return None
    try:
        done = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ["docker", "compose"] if done.returncode == 0 else None


def test_compose_file_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    cli = compose_cli()
    if cli is None:
        with capsys.disabled():
            print(
                "\n[compose] `docker compose` is not available here: validated by the YAML structure checks "
                "of tests/unit/test_compose.py only"
            )
        assert yaml.safe_load(COMPOSE_FILE.read_text())["services"]
        return
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    with capsys.disabled():
        print(
            "\n[compose] validated with `docker compose -f compose/docker-compose.yml config -q`, then the YAML checks"
        )
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"


# --- topology ------------------------------------------------------------------------------------
def test_three_nats_nodes_routed_to_each_other(services: dict[str, dict[str, Any]]) -> None:
    nats = by_image(services, "nats:")
    assert sorted(nats) == list(NATS_NODES)
    for name, node in nats.items():
        conf = mounted_file(node, "/etc/nats/nats-server.conf").read_text()
        assert re.search(rf'server_name:\s*"?{name}"?\s*$', conf, re.M), f"{name}: server_name"
        block = re.search(r"cluster\s*\{(.*?)\n\}", conf, re.S)
        assert block, f"{name}: no cluster block"
        assert re.search(r'listen:\s*"?0\.0\.0\.0:6222"?', block.group(1)), f"{name}: route listen"
        routes = re.findall(r"nats-route://([\w-]+):(\d+)", block.group(1))
        assert {host for host, _ in routes} == set(NATS_NODES) - {name}, f"{name} routes to {routes}"
        assert all(port == "6222" for _, port in routes)
        assert re.search(r"jetstream\s*\{", conf), f"{name}: JetStream"
        store = re.search(r'store_dir:\s*"?([^"\s]+)"?', conf)
        assert store and store.group(1) in volume_mounts(node), f"{name}: JetStream data on a volume"
        # operator-mode auth, rendered by the trust init service into a volume beside the config
        assert re.search(r'^include\s+"?auth/auth\.conf"?', conf, re.M), f"{name}: includes the auth block"
        assert volume_mounts(node).get("/etc/nats/auth") == "nats-auth"
        assert node["depends_on"]["trust"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in node
    data_volumes = {volume_mounts(node)["/data"] for node in nats.values()}
    assert len(data_volumes) == 3, "every node has its own data volume"


def test_trust_init_renders_the_auth_block_into_the_shared_volume(services: dict[str, dict[str, Any]]) -> None:
    trust = services["trust"]
    assert "render.py" in command_of(trust)
    assert trust.get("restart") == "no"
    assert "nats-auth" in volume_mounts(trust).values()
    assert "secrets" in volume_mounts(trust).values()


def test_two_replicas_of_every_platform_service(services: dict[str, dict[str, Any]]) -> None:
    for name in PLATFORM_SERVICES:
        running = {n: s for n, s in services.items() if f"-m services.{name}" in command_of(s)}
        assert sum(replicas(s) for s in running.values()) == 2, f"{name}: {sorted(running)}"


def platform_services(services: dict[str, dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """compose service name -> (platform service, definition)."""
    out = {}
    for compose_name, service in services.items():
        match = re.search(r"-m services\.(\w+)", command_of(service))
        if match:
            out[compose_name] = (match.group(1), service)
    return out


def test_services_run_on_the_cluster_with_three_replicas(services: dict[str, dict[str, Any]]) -> None:
    for compose_name, (name, service) in platform_services(services).items():
        env = env_of(service)
        urls = env["TETHER_NATS_URL"].split(",")
        assert sorted(urls) == [f"tls://{node}:4222" for node in NATS_NODES], compose_name
        assert env["TETHER_REPLICAS"] == "3", compose_name
        creds = env["TETHER_NATS_CREDS"]
        assert any(creds.startswith(target + "/") for target in volume_mounts(service)), f"{compose_name}: creds"
        assert env["TETHER_PROMETHEUS_PORT"].isdigit(), compose_name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318", compose_name
        assert f"service.instance.id={compose_name}" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""), compose_name
        for node in NATS_NODES:
            assert service["depends_on"][node]["condition"] == "service_healthy", compose_name
        if name == "registry":
            assert creds.startswith(env["TETHER_AUTH_DIR"] + "/"), "the registry holds the trust beside the creds"
        if name == "access":
            assert env["TETHER_ADMIN_TOKEN_FILE"].startswith("/var/lib/tether/secrets/")
        if name == "api":
            assert env["TETHER_HTTP_HOST"] == "0.0.0.0"
            assert service.get("ports") and "healthcheck" in service


def test_every_tether_variable_is_one_the_code_reads(services: dict[str, dict[str, Any]]) -> None:
    source = "\n".join(p.read_text() for d in ("services", "agent") for p in (ROOT / d).rglob("*.py"))
    for name, service in services.items():
        for key in env_of(service):
            if key.startswith("TETHER_"):
                assert f'"{key}"' in source, f"{name}: nothing reads {key}"


def test_one_agent_on_the_sim_driver(services: dict[str, dict[str, Any]]) -> None:
    agents = {n: s for n, s in services.items() if "-m agent" in command_of(s)}
    assert len(agents) == 1
    (agent,) = agents.values()
    env = env_of(agent)
    assert env["TETHER_AGENT_DRIVER"] == "sim"
    assert sorted(env["TETHER_AGENT_SERVER"].split(",")) == [f"tls://{node}:4222" for node in NATS_NODES]
    state = env["TETHER_AGENT_STATE_DIR"]
    assert state in volume_mounts(agent), "the agent's credentials survive a restart"
    assert "secrets" not in volume_mounts(agent).values(), "the agent never sees the platform's secrets"
    # its one-time connect token comes from the connect job, through the agent's own state volume
    job_name = next(iter(agent["depends_on"]))
    job = services[job_name]
    assert "connect_agent.py" in command_of(job)
    assert agent["depends_on"][job_name]["condition"] == "service_completed_successfully"
    assert volume_mounts(job)[state] == volume_mounts(agent)[state]
    assert f"{state}/connect.token" in command_of(agent)


def test_observability_stack(services: dict[str, dict[str, Any]]) -> None:
    assert len(by_image(services, "otel/opentelemetry-collector")) == 1
    assert len(by_image(services, "prom/prometheus")) == 1
    assert len(by_image(services, "grafana/grafana")) == 1


def test_depends_on_names_existing_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency in service.get("depends_on") or []:
            assert dependency in services, f"{name} depends on missing {dependency}"


# --- files ---------------------------------------------------------------------------------------
def test_every_referenced_file_exists(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for source, _target in bind_mounts(service):
            path = (COMPOSE_DIR / source).resolve()
            assert path.is_relative_to(COMPOSE_DIR), f"{name}: {source} is outside compose/"
            assert path.exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context == ROOT, f"{name}: images build from the repository"
            assert (context / build["dockerfile"]).is_file()
    for volume in {v for s in services.values() for v in volume_mounts(s).values()}:
        assert volume in (compose.get("volumes") or {}), f"volume {volume} is not declared"


def test_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert re.search(r"pip install \.(\s|$)", dockerfile)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the default user is not root"
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile, re.M):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing in the build context"
    # the scripts the compose services run are in the image
    for script in ("render.py", "connect_agent.py"):
        assert f"compose/{script}" in dockerfile
        assert any(f"/opt/tether/{script}" in command_of(s) for s in services.values())
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "schemas/", "services/", "agent/"):
        assert f"!{needed}" in ignore, f"{needed} is left out of the build context"


# --- NATS configs, checked by nats-server itself ------------------------------------------------------
@pytest.fixture(scope="module")
def render() -> ModuleType:
    return load_script("render")


Ports = dict[str, tuple[int, int, int]]
"""node -> (client, monitoring, route) port on loopback."""


def render_node_configs(render: ModuleType, tmp_path: Path, loopback: bool = False) -> tuple[dict[str, Path], Ports]:
    """The rendered trust and TLS files and each node's compose config, with the containers' mount points
    (/etc/nats/...) moved under ``tmp_path``; ``loopback``: also the ports, data dirs and routes, so that the
    three nodes run side by side on this machine. Returns node -> config file, and the loopback ports."""
    tls_dir, ca_dir = tmp_path / "nats-tls", tmp_path / "nats-ca"
    render.nats_tls(tmp_path / "pki", tls_dir, ca_dir)
    ports = {node: (free_port(), free_port(), free_port()) for node in NATS_NODES}  # client, monitor, route
    configs = {}
    for node in NATS_NODES:
        etc = tmp_path / node / "etc"
        render.render(tmp_path / "secrets", etc / "auth", tmp_path / node / "data" / "resolver")
        conf = (COMPOSE_DIR / "nats" / f"{node}.conf").read_text().replace("/etc/nats/tls/", f"{tls_dir}/")
        if loopback:
            client, monitor, route = ports[node]
            conf = conf.replace('"0.0.0.0:4222"', f'"127.0.0.1:{client}"').replace(
                '"0.0.0.0:8222"', f'"127.0.0.1:{monitor}"'
            )
            conf = conf.replace('"0.0.0.0:6222"', f'"127.0.0.1:{route}"')
            conf = conf.replace('store_dir: "/data"', f'store_dir: "{tmp_path / node / "data"}"')
            for other, (_, _, other_route) in ports.items():
                conf = conf.replace(f"nats-route://{other}:6222", f"nats-route://127.0.0.1:{other_route}")
        configs[node] = etc / f"{node}.conf"
        configs[node].write_text(conf)
    return configs, ports


def test_nats_configs_are_valid_for_nats_server(render: ModuleType, tmp_path: Path) -> None:
    for node, conf in render_node_configs(render, tmp_path)[0].items():
        done = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{node}: {done.stdout}{done.stderr}"


def test_render_keeps_the_trust_and_the_admin_token(render: ModuleType, tmp_path: Path) -> None:
    auth_conf = render.render(tmp_path / "secrets", tmp_path / "nats-auth")
    trust = (tmp_path / "secrets" / "auth" / "trust.json").read_text()
    token = (tmp_path / "secrets" / "admin.token").read_text()
    assert token.startswith("tat_")
    for name in ("platform.creds", "sys.creds"):
        assert (tmp_path / "secrets" / "auth" / name).stat().st_mode & 0o077 == 0
    assert "operator:" in auth_conf.read_text() and "resolver_preload" in auth_conf.read_text()
    for seed in json.loads(trust).values():
        assert seed not in auth_conf.read_text(), "no seed in the NATS auth block"
    render.main(["--secrets", str(tmp_path / "secrets"), "--nats-auth", str(tmp_path / "nats-auth")])
    assert (tmp_path / "secrets" / "auth" / "trust.json").read_text() == trust
    assert (tmp_path / "secrets" / "admin.token").read_text() == token


# --- the agent's connect job -------------------------------------------------------------------------
def test_connect_job_connects_once_and_starts_over_after_a_wipe(tmp_path: Path) -> None:
    connect_agent = load_script("connect_agent")
    calls: list[str] = []
    existing = {"sim-1"}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        assert request.headers["Authorization"] == "Bearer tat_admin"
        if request.url.path == "/api/v1/clusters":
            if "sim-1" in existing:
                return httpx.Response(409, json={"error": {"code": "409", "message": "exists"}})
            existing.add("sim-1")
            return httpx.Response(201, json={"token": "tct.sim-1.secret"})
        if request.url.path == "/api/v1/clusters/sim-1/disconnect":
            existing.discard("sim-1")
            return httpx.Response(200, json={})
        return httpx.Response(404)

    http = httpx.Client(base_url="http://api", transport=httpx.MockTransport(handler))
    http.headers["Authorization"] = "Bearer tat_admin"
    assert connect_agent.connect(http, {"name": "sim-1"}) == "tct.sim-1.secret"
    assert calls == ["POST /api/v1/clusters", "POST /api/v1/clusters/sim-1/disconnect", "POST /api/v1/clusters"]

    state = tmp_path / "agent"
    state.mkdir()
    (state / "credentials.json").write_text("{}")
    (state / "connect.token").write_text("spent")
    admin = tmp_path / "admin.token"
    admin.write_text("tat_admin\n")
    args = ["--api", "http://127.0.0.1:9", "--cluster", "sim-1", "--admin-token-file", str(admin)]
    assert connect_agent.main([*args, "--state-dir", str(state)]) == 0
    assert not (state / "connect.token").exists(), "an agent with credentials needs no token"


# --- Prometheus and the collector ----------------------------------------------------------------------
def test_prometheus_scrapes_every_service_replica_and_the_collector(services: dict[str, dict[str, Any]]) -> None:
    prometheus = yaml.safe_load(mounted_file(services["prometheus"], "/etc/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = {
        job_name: {t for sc in job.get("static_configs", []) for t in sc["targets"]} for job_name, job in jobs.items()
    }
    expected = {f"{name}:{env_of(s)['TETHER_PROMETHEUS_PORT']}" for name, (_, s) in platform_services(services).items()}
    assert expected <= targets["tether"]
    collector = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert f"otel-collector:{port}" in targets["otel-collector"]
    for job_targets in targets.values():
        for target in job_targets:
            host = target.rsplit(":", 1)[0]
            assert host == "localhost" or host in services, f"scrape target {target} is no compose service"


def test_collector_takes_otlp_and_exports_prometheus(services: dict[str, dict[str, Any]]) -> None:
    ((name, service),) = by_image(services, "otel/opentelemetry-collector").items()
    config_path = command_of(service).split("--config=", 1)[1].split()[0]
    collector = yaml.safe_load(mounted_file(service, config_path).read_text())
    http_endpoint = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http_endpoint == "0.0.0.0:4318", "reachable from the other containers"
    assert name == "otel-collector"
    pipelines = collector["service"]["pipelines"]
    assert "otlp" in pipelines["metrics"]["receivers"] and "prometheus" in pipelines["metrics"]["exporters"]
    assert "otlp" in pipelines["traces"]["receivers"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], f"{component} is not defined under {kind}"


# --- Grafana -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "tether.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_grafana_provisions_the_datasource_and_the_dashboard(
    services: dict[str, dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    grafana = next(iter(by_image(services, "grafana/grafana").values()))
    provisioning = mounted_file(grafana, "/etc/grafana/provisioning")
    datasources = [
        ds
        for f in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert [ds["url"] for ds in datasources] == ["http://prometheus:9090"]
    uid = datasources[0]["uid"]
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert len(providers) == 1
    dashboards_dir = mounted_file(grafana, providers[0]["options"]["path"])
    assert (dashboards_dir / "tether.json").is_file()
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    used |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"] if "datasource" in v}
    assert used == {uid}


PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv", "exp", "floor",
    "group", "histogram_quantile", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time",
    "max", "max_over_time", "min", "min_over_time", "quantile", "quantile_over_time", "rate", "resets", "round",
    "scalar", "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum", "sum_over_time", "time", "timestamp",
    "topk", "vector",
}  # fmt: skip
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, $variables
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, $__rate_interval
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        token = match.group(0)
        if text[match.end() :].lstrip().startswith("(") and token in PROMQL_FUNCTIONS:
            continue
        if token in PROMQL_KEYWORDS or token in PROMQL_FUNCTIONS:
            continue
        names.add(token)
    return names


def test_promql_parser_helper() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(tether_api_request_duration_seconds_bucket{job="tether"}'
        "[$__rate_interval])))"
    ) == {"tether_api_request_duration_seconds_bucket"}
    assert metric_names('max by (cluster) (tether_commands_pending{cluster=~"$cluster"}) > 0') == {
        "tether_commands_pending"
    }
    assert metric_names("up + process_cpu_seconds_total") == {"up", "process_cpu_seconds_total"}


def test_dashboard_queries_only_the_services_metrics(dashboard: dict[str, Any]) -> None:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= SERIES, f"{panel['title']}: unknown metrics {names - SERIES}"
            used |= names
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.match(r"label_values\(\s*([A-Za-z_:][\w:]*)", query)
        assert match and match.group(1) in SERIES, f"variable {variable['name']}: {query}"
    shown = {
        name.removesuffix(suffix) for name in used for suffix in ("_bucket", "_count", "_sum") if name.endswith(suffix)
    }
    assert used | shown >= METRICS, f"not on the dashboard: {METRICS - used - shown}"


def test_dashboard_has_the_panels(dashboard: dict[str, Any]) -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for words in (
        "clusters online",
        "clusters connected",
        "heartbeat lag p50 / p99",
        "commands issued",
        "commands applied",
        "commands failed",
        "pending per cluster",
        "command latency p50 / p95 / p99",
        "api latency p99 by route",
        "resyncs",
    ):
        assert words in titles, words
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    per_cluster = [p for p in dashboard["panels"] if "per cluster" in p["title"].lower()]
    for panel in per_cluster:
        assert all("by (cluster)" in t["expr"] for t in panel["targets"]), panel["title"]


# --- what compose exposes (issue 12) -------------------------------------------------------------------------
PUBLIC_PORTS = {4222, 8080}
"""What must be reachable from elsewhere: agents dial NATS' client port; people and CLIs use the API."""


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each published port; '' for every address."""
    out = []
    for entry in service.get("ports") or []:
        parts = str(entry).split(":")
        host = parts[0] if len(parts) == 3 else ""
        out.append((host, int(parts[-1].split("/")[0])))
    return out


def test_admin_and_monitoring_ports_are_bound_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    seen = set()
    for name, service in services.items():
        for host, port in published(service):
            seen.add(port)
            if port not in PUBLIC_PORTS:
                assert host == "127.0.0.1", f"{name} publishes {port} on every address"
    assert {8222, 9090, 3000, 4317} <= seen  # the monitoring ports are still there, for the local operator


def test_grafana_admin_password_is_a_generated_secret(services: dict[str, dict[str, Any]]) -> None:
    grafana = next(iter(by_image(services, "grafana/grafana").values()))
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    secret_file = env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    volume = next(
        source
        for source, target in (str(v).split(":")[:2] for v in grafana["volumes"])
        if secret_file.startswith(target)
    )
    trust = services["trust"]
    assert any(str(v).startswith(f"{volume}:") for v in trust["volumes"])
    assert grafana["depends_on"]["trust"]["condition"] == "service_completed_successfully"
    # Only the init job and Grafana see that volume.
    assert {n for n, s in services.items() if any(str(v).startswith(f"{volume}:") for v in s.get("volumes") or [])} == {
        "trust",
        next(iter(by_image(services, "grafana/grafana"))),
    }


def test_render_makes_grafana_password_once(render: ModuleType, tmp_path: Path) -> None:
    args = [
        "--secrets",
        str(tmp_path / "s"),
        "--nats-auth",
        str(tmp_path / "n"),
        "--grafana-secrets",
        str(tmp_path / "g"),
    ]
    render.main(args)
    password = (tmp_path / "g" / "admin.password").read_text()
    assert len(password) >= 24 and password != "admin"
    render.main(args)
    assert (tmp_path / "g" / "admin.password").read_text() == password


# --- TLS for NATS (issue 15) -------------------------------------------------------------------------
NATS_CA = "/etc/tether/nats-ca/ca.pem"


def test_nats_nodes_serve_clients_and_routes_over_tls(services: dict[str, dict[str, Any]]) -> None:
    for name, node in by_image(services, "nats:").items():
        conf = mounted_file(node, "/etc/nats/nats-server.conf").read_text()
        cluster = re.search(r"^cluster\s*\{(.*?)\n\}", conf, re.S | re.M)
        assert cluster, name
        client_part = conf.replace(cluster.group(0), "")
        client_tls = re.search(r"^tls\s*\{(.*?)\n\}", client_part, re.S | re.M)
        assert client_tls, f"{name}: no tls block for clients"
        route_tls = re.search(r"tls\s*\{(.*?)\}", cluster.group(1), re.S)
        assert route_tls, f"{name}: routes without TLS"
        for block, cert in ((client_tls.group(1), "server"), (route_tls.group(1), "route")):
            assert (
                f'cert_file: "/etc/nats/tls/{cert}.pem"' in block
                and f'key_file: "/etc/nats/tls/{cert}-key.pem"' in block
            )
        assert 'ca_file: "/etc/nats/tls/ca.pem"' in route_tls.group(1), f"{name}: nodes verify each other"
        assert volume_mounts(node).get("/etc/nats/tls") == "nats-tls"
    trust = services["trust"]
    command = command_of(trust)
    for flag, volume in (("--pki", "pki"), ("--nats-tls", "nats-tls"), ("--nats-ca", "nats-ca")):
        target = re.search(rf"{flag} (\S+)", command)
        assert target and volume_mounts(trust).get(target.group(1)) == volume, flag
    # The CA's key only in the trust job; the server key only there and on the NATS nodes.
    mounting = {v: {n for n, s in services.items() if v in volume_mounts(s).values()} for v in ("pki", "nats-tls")}
    assert mounting["pki"] == {"trust"}
    assert mounting["nats-tls"] == {"trust", *NATS_NODES}


def test_services_and_the_agent_dial_tls_and_verify_with_the_ca(services: dict[str, dict[str, Any]]) -> None:
    for name, (_, service) in platform_services(services).items():
        env = env_of(service)
        urls = env["TETHER_NATS_URL"].split(",")
        assert urls and all(url.startswith("tls://") for url in urls), name
        assert env["TETHER_NATS_CA"] == NATS_CA and volume_mounts(service).get("/etc/tether/nats-ca") == "nats-ca"
        public = env.get("TETHER_PUBLIC_NATS_URL")
        if public is not None:  # what agents are told to dial
            default = public.split(":-", 1)[1].rstrip("}") if public.startswith("${") else public
            assert all(url.startswith("tls://") for url in default.split(",")), name
            assert env["TETHER_PUBLIC_CA_FILE"] == NATS_CA, f"{name}: agents are handed the CA"
    agent = services["agent-sim-1"]
    assert f"--ca-file {NATS_CA}" in command_of(agent)
    assert volume_mounts(agent).get("/etc/tether/nats-ca") == "nats-ca"
    assert all(url.startswith("tls://") for url in env_of(agent)["TETHER_AGENT_SERVER"].split(","))


def test_render_makes_the_ca_and_certificate_once(render: ModuleType, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    render_node_configs(render, tmp_path)
    tls_dir, ca_dir = tmp_path / "nats-tls", tmp_path / "nats-ca"
    cert = x509.load_pem_x509_certificate((tls_dir / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    valid_for = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    valid_for |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert {"nats-1", "nats-2", "nats-3", "localhost", "127.0.0.1"} <= valid_for
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    route = x509.load_pem_x509_certificate((tls_dir / "route.pem").read_bytes())
    route.verify_directly_issued_by(ca)
    usages = set(route.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages, "routes verify both ways"
    assert (tls_dir / "ca.pem").read_bytes() == (ca_dir / "ca.pem").read_bytes()
    assert not (ca_dir / "ca-key.pem").exists() and not (tls_dir / "ca-key.pem").exists(), "the CA key stays in pki"
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.pem"]
    before = {p: p.read_bytes() for p in (tls_dir / "server.pem", tls_dir / "route.pem", ca_dir / "ca.pem")}
    args = ["--secrets", str(tmp_path / "secrets"), "--nats-auth", str(tmp_path / "auth")]
    render.main([*args, "--pki", str(tmp_path / "pki"), "--nats-tls", str(tls_dir), "--nats-ca", str(ca_dir)])
    assert {p: p.read_bytes() for p in before} == before, "an existing CA and certificate are kept"
    with pytest.raises(SystemExit):
        render.main([*args, "--pki", str(tmp_path / "pki")])


def _routes(monitor: int) -> int:
    try:
        return int(httpx.get(f"http://127.0.0.1:{monitor}/routez", timeout=2).json()["num_routes"])
    except (httpx.HTTPError, ValueError, KeyError):
        return -1


async def _connect_over_tls(servers: list[str], creds: Path, ca: Path) -> None:
    """A service's own user connects over TLS, verifying with the CA, and JetStream answers through the cluster;
    without the CA the server's certificate is not trusted."""
    import asyncio
    import ssl
    import time

    import nats

    context = ssl.create_default_context(cafile=str(ca))
    nc = await nats.connect(servers, tls=context, user_credentials=str(creds), allow_reconnect=False)
    try:
        assert nc.connected_url is not None and nc.connected_url.scheme == "tls"
        deadline = time.monotonic() + 15
        while True:  # until the nodes have elected JetStream's meta leader
            try:
                # A request the service's allow-list holds; no stream exists yet, so JetStream's own answer is
                # "stream not found" (before a meta leader there is none, or a 503).
                reply = await nc.request("$JS.API.STREAM.INFO.EVENTS", b"", timeout=2)
                info = json.loads(reply.data)
            except nats.errors.TimeoutError:
                info = {}
            if info.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
                break
            assert time.monotonic() < deadline, f"no JetStream through the TLS cluster: {info}"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await nats.connect(
            servers[:1], tls=ssl.create_default_context(), user_credentials=str(creds), allow_reconnect=False,
            max_reconnect_attempts=0, connect_timeout=3,
        )  # fmt: skip


def test_the_rendered_cluster_runs_with_tls_on_loopback(render: ModuleType, tmp_path: Path) -> None:
    """The three rendered configs as they are (mount points, ports and data dirs moved to this machine): the
    nodes route to each other over TLS, both ways verified with the CA, and clients connect over TLS."""
    import asyncio
    import time

    configs, ports = render_node_configs(render, tmp_path, loopback=True)
    procs = []
    try:
        for node, conf in configs.items():
            with (tmp_path / f"{node}.log").open("w") as log:
                procs.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log))
        deadline = time.monotonic() + 15
        while not all(_routes(monitor) >= 2 for _, monitor, _ in ports.values()):
            logs = "".join((tmp_path / f"{node}.log").read_text()[-1500:] for node in configs)
            assert time.monotonic() < deadline, f"the nodes did not route to each other over TLS:\n{logs}"
            assert all(p.poll() is None for p in procs), f"a node exited:\n{logs}"
            time.sleep(0.2)
        servers = [f"tls://127.0.0.1:{client}" for client, _, _ in ports.values()]
        creds = tmp_path / "secrets" / "auth" / "svc-health.creds"
        asyncio.run(_connect_over_tls(servers, creds, tmp_path / "nats-ca" / "ca.pem"))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- least privilege: each service its own NATS user (issue 12) --------------------------------------
def test_every_service_connects_as_its_own_nats_user(
    services: dict[str, dict[str, Any]], render: ModuleType, tmp_path: Path
) -> None:
    render.render(tmp_path / "secrets", tmp_path / "nats-auth")
    for name, (platform_service, service) in platform_services(services).items():
        creds = env_of(service)["TETHER_NATS_CREDS"]
        assert creds == f"/var/lib/tether/secrets/auth/svc-{platform_service}.creds", name
        assert volume_mounts(service)["/var/lib/tether/secrets"] == "secrets"
        assert (tmp_path / "secrets" / "auth" / Path(creds).name).is_file(), f"render.py writes {creds}"
    for name, service in services.items():
        assert "platform.creds" not in json.dumps(service), f"{name} uses the unrestricted platform user"
