"""deploy/ validated offline: HAProxy's own config check, the Kubernetes manifests against the
API schemas (kubernetes-validate) and against each other, the compose file (its own ``config``
check where the plugin is installed), and every detector command line against our CLI parser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from realtime.cli_args import build_parser, options_from_args
from realtime.inputs import Listener, resolve
from tests.services import DEPLOY_HAPROXY

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (the test extra)")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S_VERSION = "1.30.0"  # oldest API we promise; the manifests use only GA kinds (apps/v1, policy/v1, autoscaling/v2)
DRAIN_S, FLUSH_S = 15.0, 5.0  # DetectorServer's drain_s and flush_s defaults


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> dict:
    found = [d for d in manifests() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def check_detector_args(args: list[str]) -> None:
    """The arguments parse and validate as our CLI does (a token comes from the environment)."""
    ap = build_parser()
    ns = ap.parse_args(args)
    ns.token = "from-the-environment"
    options = options_from_args(ns)  # every option validated, as main does (ValueError otherwise)
    assert isinstance(resolve(ns.input, options), Listener)  # and the bind rules of --input ws
    assert ns.input == ["ws"] and options.server.port == 8765


def test_haproxy_config_is_valid() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy not installed (apt-get install haproxy; .ci/run does)")
    out = subprocess.run([haproxy, "-c", "-f", str(DEPLOY_HAPROXY), "-f", str(DEPLOY / "haproxy" / "servers-compose.cfg")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    text = "\n".join(line.partition("#")[0] for line in DEPLOY_HAPROXY.read_text().splitlines())
    for needed in ("balance leastconn", "uri /healthz", "timeout tunnel", "hard-stop-after"):
        assert needed in text
    assert "shutdown-sessions" not in text  # a draining server's streams must get their summaries


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the test extra) not installed")
    docs = manifests()
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for d in docs:
        kv.validate(d, K8S_VERSION, strict=True)  # raises on any schema error or unknown field
    with pytest.raises(kv.ValidationError):  # and it does reject a wrong manifest
        kv.validate({**by_kind("Service"), "spec": {"ports": [{"port": "not-a-number"}]}}, K8S_VERSION, strict=True)


def test_kubernetes_manifests_fit_together_and_drain() -> None:
    dep, svc, pdb, hpa = (by_kind(k) for k in ("Deployment", "Service", "PodDisruptionBudget",
                                                 "HorizontalPodAutoscaler"))
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (dep["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert svc["spec"]["ports"][0]["targetPort"] in ports
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and probe["port"] in ports
    check_detector_args(container["args"])
    assert container["env"][0]["name"] == "REALTIME_DETECT_TOKEN"  # a non-loopback --host needs it
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + DRAIN_S + FLUSH_S
    assert "cpu" in container["resources"]["requests"]  # the HPA's utilisation is relative to it


def test_compose_file_and_dockerfile_run_valid_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"detector", "haproxy", "redis"}
    detector = compose["services"]["detector"]
    check_detector_args(detector["command"])
    events = detector["command"][detector["command"].index("--events") + 1]
    assert events.startswith("redis://redis:6379/")
    grace = float(re.fullmatch(r"(\d+)s", detector["stop_grace_period"]).group(1))
    assert grace > DRAIN_S + FLUSH_S
    for volume in compose["services"]["haproxy"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists()
    for arg in compose["services"]["haproxy"]["command"]:
        if arg.endswith(".cfg"):
            assert (DEPLOY / "haproxy" / Path(arg).name).is_file()
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd and re.search(r'^ENTRYPOINT \["realtime-detect"\]$', text, re.M)
    check_detector_args(json.loads(cmd.group(1)))
    assert re.search(r"^USER (?!root)\w+", text, re.M) and "HEALTHCHECK" in text and "/healthz" in text
    for src in re.findall(r"^COPY (.+) \./", text, re.M):
        for name in src.split():
            assert (DEPLOY.parent / name).exists(), name


def test_compose_config_check() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode:
        pytest.skip("the docker compose plugin is not installed: its offline 'config' check cannot run")
    out = subprocess.run([docker, "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
                         capture_output=True, text=True, timeout=60,
                         env={"REALTIME_DETECT_TOKEN": "t", "PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert out.returncode == 0, out.stderr
