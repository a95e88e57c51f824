"""docker-compose.yml describes the production stack; the README's commands exist."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_has_the_production_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker-gpu"} <= set(services)
    assert "gunicorn" in services["web"]["command"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "gpu" in " ".join(services["worker-gpu"]["command"])


def test_compose_workers_share_no_disk_have_unique_names_and_health_checks():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "seaweedfs" in services and "weed" in services["seaweedfs"]["command"]
    for name in ("web", "worker-gpu", "worker-cpu"):
        env = services[name]["environment"]
        assert env["CONDENSE_S3_ENDPOINT_URL"] == "http://seaweedfs:8333" and env["CONDENSE_S3_BUCKET"]
        assert "healthcheck" in services[name]
    for name in ("worker-gpu", "worker-cpu"):
        command = " ".join(services[name]["command"])
        # A node name per container (re-created containers get new hostnames; leases recover their jobs).
        assert "-n" in command.split() and "$$HOSTNAME" in command and "--concurrency" in command


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_config_validates():
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, env={"DJANGO_SECRET_KEY": "x", "S3_SECRET_KEY": "y", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./condense test" in readme and "./condense serve" in readme
    assert "./condense test" in (ROOT / ".ci" / "run").read_text()


def test_check_deploy_is_clean_over_https_with_a_secret_from_the_environment(tmp_path):
    import secrets
    import sys

    env = {"PATH": "/usr/bin:/bin", "DJANGO_SECRET_KEY": secrets.token_urlsafe(60), "CONDENSE_HTTPS": "1",
           "CONDENSE_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "security." not in result.stdout + result.stderr
    assert not (tmp_path / "secret_key").exists()  # the key came from the environment, none was written
