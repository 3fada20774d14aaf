"""deploy/: the container image, the compose stack and the Kubernetes manifests, checked without a container
engine (this machine has none): the standard linters (hadolint, kubernetes-validate against the API schemas,
yamllint), and the facts that tie them to the gateway (config files that tiergate itself accepts, probe paths
the app serves, a grace period that covers the gateway's own drain)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tiergate.api import create_app
from tiergate.config import parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is a test dependency (pip install -e '.[test]')"
    return found


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the manifests and the compose file give the gateways."""
    for name in ("TIERGATE_APPS_KEY", "TIERGATE_DEV_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, "test-secret")


def manifests() -> dict[str, dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((DEPLOY / "k8s").glob("*.yaml"))]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_hadolint_passes_the_dockerfile() -> None:
    done = subprocess.run([tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    files = sorted(str(p) for p in (DEPLOY / "k8s").glob("*.yaml"))
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", *files], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(files)


def test_yamllint_passes_every_yaml_file() -> None:
    config = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: disable}}"
    done = subprocess.run(
        [tool("yamllint"), "-s", "-d", config, str(DEPLOY)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_as_non_root_and_checks_readiness() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users == ["10001"]
    assert "/readyz" in text.split("HEALTHCHECK", 1)[1]
    assert "-r requirements/engine.txt" in text  # the portable engine build


@pytest.mark.parametrize("path", ["k8s/configmap.yaml", "compose/tiergate.yaml"])
def test_the_shipped_configs_are_ones_tiergate_accepts(path: str) -> None:
    raw = (DEPLOY / path).read_text()
    data = yaml.safe_load(raw)
    text = data["data"]["tiergate.yaml"] if data.get("kind") == "ConfigMap" else raw
    config = parse_config(yaml.safe_load(text), path)
    assert config.server.host == "0.0.0.0"
    assert config.keys, "a gateway listening beyond loopback needs API keys"
    create_app(config)  # builds every backend and policy: a wrong kind or field fails here


def test_probes_ports_and_grace_period_match_the_gateway() -> None:
    k8s = manifests()
    config = parse_config(yaml.safe_load(k8s["ConfigMap/tiergate"]["data"]["tiergate.yaml"]))
    pod = k8s["Deployment/tiergate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["ports"][0]["containerPort"] == config.server.port
    paths = {r.path for r in create_app(config).routes}  # type: ignore[attr-defined]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > config.server.shutdown_grace_s + pause
    assert pod["securityContext"]["runAsNonRoot"] is True
    budget = k8s["PodDisruptionBudget/tiergate"]["spec"]["minAvailable"]
    assert budget < k8s["Deployment/tiergate"]["spec"]["replicas"]
    hpa = k8s["HorizontalPodAutoscaler/tiergate"]["spec"]
    assert hpa["minReplicas"] > budget


def test_the_compose_stack_has_three_gateways_behind_the_balancer() -> None:
    stack = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = stack["services"]
    gateways = [name for name, s in services.items() if s.get("image") == "tiergate:0.1.0" and "entrypoint" not in s]
    assert sorted(gateways) == ["gateway-1", "gateway-2", "gateway-3"]
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert all(f"server {g}:8787" in nginx for g in gateways)
    assert {"postgres", "redis", "open-weight"} <= set(services)
    config = parse_config(yaml.safe_load((DEPLOY / "compose" / "tiergate.yaml").read_text()))
    assert config.ledger.url.startswith("postgresql://")
    assert "@postgres/" in config.ledger.url
    assert any(getattr(b, "base_url", None) == "http://open-weight:8000/v1" for b in config.backends)
