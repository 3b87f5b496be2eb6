"""The test servers' database template (tests/prefect_server.py): a server on a copy skips Prefect's
block registration at start (SEEDED_SERVER_ENV), so the copy must already hold every block type and
schema that registration gives: Prefect's own, the installed collections' and the project's. Prefect's
in-process harness (conftest.py's prefect_harness) starts on a copy too."""

from __future__ import annotations

import pytest

from tests import prefect_server
from tests.prefect_server import local_prefect

pytestmark = pytest.mark.integration


def _blocks(lp) -> tuple[list[str], list[tuple[str, str]]]:
    types = sorted(t["slug"] for t in lp.post("/block_types/filter", {}))
    schemas = sorted((s["checksum"], s["version"]) for s in lp.post("/block_schemas/filter", {}))
    return types, schemas


def test_a_seeded_server_has_the_block_types_its_own_registration_would_add(tmp_path, monkeypatch):
    with local_prefect(tmp_path / "seeded", deploy=False) as seeded:
        kept = _blocks(seeded)
    # the same template, with Prefect registering at start as a server on a new database does
    monkeypatch.setattr(prefect_server, "SEEDED_SERVER_ENV", {})
    with local_prefect(tmp_path / "registering", deploy=False) as registering:
        registered = _blocks(registering)
    # Prefect's own, a collection's (prefect-aws) and the project's (loaded through its collection entry point)
    assert {"secret", "s3-bucket", "vibeinsight-openai-transcriber"} <= set(registered[0]), registered[0]
    assert kept == registered, (sorted(set(registered[0]) - set(kept[0])), len(kept[1]), len(registered[1]))


@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_tests_harness_starts_on_the_template_with_its_block_types():
    """Prefect's in-process harness (conftest.py's prefect_harness) also starts on a copy of the template
    and skips the registration: the copy is where its block types come from."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        slugs = {t.slug for t in client.read_block_types()}
    assert {"secret", "s3-bucket", "vibeinsight-openai-transcriber"} <= slugs, sorted(slugs)
