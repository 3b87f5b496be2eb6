"""Which job variables a deployment or a flow run may set on the fly-machines pool: pure logic (the
worker-side refusal on a real Prefect API is in test_fly_worker_privilege.py)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from deployments.fly_worker import FlyMachinesJobConfiguration
from deployments.fly_worker.config import refusal, registry_image

pytestmark = pytest.mark.unit

APP = "vibeinsight-runs"


@pytest.mark.parametrize("overrides", [
    {},
    {"region": "nrt,hkg", "cpus": 4, "memory_mb": 8192, "cpu_kind": "performance", "max_runtime_s": 600},
    {"env": {"VIBEINSIGHT_OPENAI_CHUNK_S": "60", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "TZ": "UTC"}},
    {"app": APP},  # naming the pool's own app is no change
    {"image": f"registry.fly.io/{APP}:deployment-01JXYZ"},
    {"image": f"registry.fly.io/{APP}@sha256:{'a' * 64}"},
    {"name": "my-run", "labels": {"team": "x"}},
])
def test_what_a_deployment_or_run_may_still_set(overrides):
    assert refusal(overrides, APP) is None


@pytest.mark.parametrize(("overrides", "named"), [
    ({"api_url": "http://127.0.0.1:9"}, "'api_url'"),
    ({"api_url": "https://api.machines.dev"}, "'api_url'"),  # not a variable at all any more
    ({"logs_url": "http://evil.example"}, "'logs_url'"),
    ({"command": "sh -c 'env'"}, "'command'"),
    ({"app": "another-app"}, "'app'"),
    ({"image": "docker.io/evil/image:latest"}, "'image'"),
    ({"image": f"registry.fly.io/{APP}-other:latest"}, "'image'"),  # another app's registry
    ({"image": f"registry.fly.io/{APP}:x/../../evil"}, "'image'"),
    ({"env": {"OPENAI_BASE_URL": "http://evil.example"}}, "OPENAI_BASE_URL"),
    ({"env": {"HTTPS_PROXY": "http://evil.example"}}, "HTTPS_PROXY"),
    ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "LD_PRELOAD"),
    ({"env": {"PYTHONPATH": "/tmp"}}, "PYTHONPATH"),
    ({"env": {"PREFECT_API_URL": "http://evil.example/api"}}, "PREFECT_API_URL"),
    ({"env": {"SUPABASE_SERVICE_ROLE_KEY": "x"}}, "SUPABASE_SERVICE_ROLE_KEY"),
    ({"env": {"AWS_ENDPOINT_URL_S3": "http://evil.example"}}, "AWS_ENDPOINT_URL_S3"),
    ({"env": {"fly_api_token": "x"}}, "fly_api_token"),
])
def test_what_is_refused_and_the_reason_names_it(overrides, named):
    reason = refusal(overrides, APP)
    assert reason is not None and named in reason


def test_max_runtime_may_only_shorten_the_pools():
    assert refusal({"max_runtime_s": 600}, APP, 3600) is None
    assert "'max_runtime_s'" in refusal({"max_runtime_s": 7200}, APP, 3600)
    assert "'max_runtime_s'" in refusal({"max_runtime_s": "forever"}, APP, 3600)


def test_registry_image_is_the_runs_apps_own():
    assert registry_image(f"registry.fly.io/{APP}:latest", APP)
    assert not registry_image(f"registry.fly.io/{APP}", APP)  # a tag or a digest, always
    assert not registry_image(f"registry.fly.io/{APP}:latest@evil", APP)
    assert not registry_image(f"evil.io/registry.fly.io/{APP}:latest", APP)


def _prepared(deployment_vars: dict, run_vars: dict, pool_app: str = APP) -> FlyMachinesJobConfiguration:
    from prefect.client.schemas.objects import FlowRun

    config = FlyMachinesJobConfiguration(app=pool_app)
    pool = SimpleNamespace(name="pool", id=uuid.uuid4(), base_job_template={"variables": {"properties": {
        "app": {"default": pool_app}, "max_runtime_s": {"default": 3600}}}})
    deployment = SimpleNamespace(name="api", id=uuid.uuid4(), updated=None, job_variables=deployment_vars)
    run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="brave-otter", job_variables=run_vars)
    config.prepare_for_flow_run(run, deployment, None, pool)
    return config


def test_prepare_checks_the_deployments_and_the_runs_variables_against_the_pools_app():
    assert _prepared({}, {}).refused is None
    assert _prepared({"region": "ams"}, {"cpus": 4}).refused is None
    assert "'command'" in _prepared({"command": "evil"}, {}).refused  # the deployment's own variables count too
    assert "'api_url'" in _prepared({}, {"api_url": "http://x"}).refused
    # env from both, merged key by key as Prefect merges it
    assert "OPENAI_BASE_URL" in _prepared({"env": {"OPENAI_BASE_URL": "http://x"}}, {"env": {"TZ": "UTC"}}).refused
    # the app compared is the pool's, even when the merged configuration already carries the override
    assert "'app'" in _prepared({}, {"app": "other"}).refused
    assert "'max_runtime_s'" in _prepared({"max_runtime_s": 86400}, {}).refused  # past the pool's 3600
