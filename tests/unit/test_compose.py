"""docker-compose.yml as compose itself resolves it (`docker-compose config`, offline): nothing
reaches Triton from outside, the gateway's HTTPS port is the one public port, secrets are files
and never environment values, and the services agree on ports, paths and names. No Docker
engine runs here: what needs one (building the images, GPUs) is in docs/production.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tritonkit.paths import PROJECT_ROOT
from tritonkit.serve.secrets import secret_files

from ..support import require_tool

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
#: the services that may reach Triton (its network's members)
TRITON_CLIENTS = {"gateway", "monitor", "prometheus"}


def _resolved(**env: str) -> dict[str, Any]:
    """The compose file as `docker-compose config` resolves it (variables substituted)."""
    binary = require_tool("docker-compose", "apt-get install docker-compose")
    done = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config"], capture_output=True,
                          text=True, check=False, timeout=120, cwd=PROJECT_ROOT,
                          env={"PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def _raw() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return config


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port, in either syntax."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", "0.0.0.0"), int(port["published"]),
                          int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        found.append((host, int(parts[-2]), int(parts[-1])))
    return found


def test_compose_file_passes_docker_compose_schema_check_without_any_variable() -> None:
    assert _resolved()["services"]


def test_compose_publishes_no_triton_port_and_only_the_gateway_beyond_localhost() -> None:
    services = _resolved(GATEWAY_PORT="443")["services"]
    assert "ports" not in services["triton"] and "expose" not in services["triton"]
    public = {(name, host, published, target) for name, service in services.items()
              for host, published, target in _published(service) if host != "127.0.0.1"}
    assert public == {("gateway", "0.0.0.0", 443, 8443)}
    gateway_env = services["gateway"]["environment"]
    assert gateway_env["TRITONKIT_GATEWAY_PORT"] == "8443"


def test_compose_keeps_triton_on_an_internal_network_with_its_clients_alone() -> None:
    config = _resolved()
    networks, services = config["networks"], config["services"]
    triton = set(services["triton"]["networks"])
    assert triton and all(networks[n].get("internal") is True for n in triton)
    members = {name for name, service in services.items()
               if triton & set(service.get("networks", {}))}
    assert members == TRITON_CLIENTS | {"triton"}
    # a service that publishes a port must have a network that is not internal to do it on
    for name, service in services.items():
        if service.get("ports"):
            assert any(not networks[n].get("internal") for n in service["networks"]), name


def test_compose_secrets_are_the_files_production_secrets_writes() -> None:
    secrets = _raw()["secrets"]
    folder = Path("${SECRETS_DIR:-./.secrets}")
    assert {name: spec["file"] for name, spec in secrets.items()} == {
        name: str(path) for name, path in secret_files(folder).items()}
    assert {"alert_deadman_url", "alert_pager_url"} <= set(secrets)  # the receivers' URLs too
    resolved = _resolved(SECRETS_DIR="/srv/secrets")["secrets"]
    assert resolved["triton_admin_key"]["file"] == "/srv/secrets/triton-admin-key"


def test_compose_passes_no_secret_on_a_command_line_or_in_the_environment() -> None:
    """`docker inspect` shows both: secrets travel as files under /run/secrets."""
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"\$\{[A-Z_]*(KEY|PASSWORD|TOKEN)[A-Z_]*[:}]", text)
    services = _resolved()["services"]
    for name, service in services.items():
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        environment = service.get("environment", {})
        for variable, value in environment.items():
            if variable.endswith(("_FILE", "KEYS_FILE", "TLS_CERT", "TLS_KEY")) and \
                    str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in mounted, (name, variable)
            assert not re.search(r"(KEY|PASSWORD)$", variable) or \
                str(value).startswith("/run/secrets/"), (name, variable)
        command = " ".join(map(str, service.get("command", []) or []))
        assert "admin-key=" not in command, name


def test_compose_triton_is_built_from_the_image_whose_entrypoint_closes_the_apis() -> None:
    triton = _raw()["services"]["triton"]
    assert triton["build"]["dockerfile"] == "deploy/triton/Dockerfile"
    assert "entrypoint" not in triton  # the image's own: deploy/triton/entrypoint.sh
    assert [s for s in triton["secrets"]] == ["triton_admin_key"]
    command = triton["command"]
    assert not any("restricted" in arg for arg in command)  # the entrypoint adds them
    cache = [arg for arg in command if arg.startswith("--cache-config=local,size=")]
    assert cache and int(cache[0].rsplit("=", 1)[1]) > 0
    assert "--exit-on-error=true" in command and "--model-control-mode=explicit" in command


def test_compose_gateway_serves_https_with_its_keys_and_metrics_off_the_public_port() -> None:
    gateway = _resolved()["services"]["gateway"]
    env = gateway["environment"]
    assert env["TRITONKIT_GATEWAY_TLS_CERT"] == "/run/secrets/gateway_tls_cert"
    assert env["TRITONKIT_GATEWAY_TLS_KEY"] == "/run/secrets/gateway_tls_key"
    assert env["TRITONKIT_GATEWAY_KEYS_FILE"] == "/run/secrets/gateway_keys"
    assert env["TRITONKIT_GATEWAY_DOCS"] == "false"
    assert "TRITONKIT_GATEWAY_DEV_MODE" not in env and "TRITONKIT_GATEWAY_PLAIN_HTTP" not in env
    assert "--dev-mode" not in gateway.get("command", [])
    metrics_port = int(env["TRITONKIT_GATEWAY_METRICS_PORT"])
    assert metrics_port not in {target for _, _, target in _published(gateway)}
    prometheus = yaml.safe_load((PROJECT_ROOT / "monitoring" / "prometheus" /
                                 "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in prometheus["scrape_configs"]}
    assert jobs["gateway"] == [f"gateway:{metrics_port}"]
    assert any("https://localhost:8443/healthz" in part for part in gateway["healthcheck"]["test"])


def test_compose_monitor_reads_the_admin_key_from_its_secret() -> None:
    monitor = _resolved()["services"]["monitor"]
    assert monitor["environment"]["TRITONKIT_MONITOR_TRITON_ADMIN_KEY_FILE"] == \
        "/run/secrets/triton_admin_key"
    assert "TRITONKIT_MONITOR_TRITON_ADMIN_KEY" not in monitor["environment"]
