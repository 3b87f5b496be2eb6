"""The Prefect server on PostgreSQL, and the UI trigger in a real browser: headless Chromium
(Debian's package, driven by Playwright) opens the server's UI, finds the process-audio
deployment, starts a custom run with parameters through the form; the run completes."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.prefect_server import FAST_WORKERS, local_prefect, prefect_database, psycopg_url, status_row

pytestmark = pytest.mark.e2e

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def prefect_pg(tmp_path_factory):
    with prefect_database() as db_url, local_prefect(tmp_path_factory.mktemp("deploy_pg"), db_url, workers=1,
                                                     env=FAST_WORKERS) as lp:
        yield lp


def test_server_runs_on_postgresql(prefect_pg):
    assert os.environ.get("PREFECT_API_URL") == prefect_pg.api_url
    db = Path(prefect_pg.logs.parent / "prefect-home" / "prefect.db")
    assert not db.exists()  # no SQLite fallback
    deps = prefect_pg.post("/deployments/filter", {})
    assert deps
    with psycopg.connect(psycopg_url(prefect_pg.db_url)) as c:  # the server's own database holds them
        stored = {str(r[0]) for r in c.execute("select id from deployment")}
    assert {d["id"] for d in deps} <= stored


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, found as bin/bootstrap looks for it; a missing browser fails the test with
    the reason, never skips it (Playwright downloads no browser here: it drives this one)."""
    found = shutil.which("chromium")
    if not found:
        pytest.fail("chromium is not on PATH: `bin/bootstrap test` installs Debian's chromium package "
                    "(apt-get install chromium); the UI test needs it", pytrace=False)
    return found


def test_custom_run_from_the_ui_completes(chromium, prefect_pg, audio, tmp_path):
    from playwright.sync_api import sync_playwright

    base = prefect_pg.api_url.removesuffix("/api")
    dep = prefect_pg.get("/deployments/name/process-audio/api")
    from blocks.storage import LocalBucket

    # the workers' local bucket reads only its uploads: the file is placed there first, as the app's upload would
    source = LocalBucket(root=str(prefect_pg.home / "bucket")).place_upload(str(audio / "hotwords.mp3"))
    sid = str(uuid.uuid4())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/deployments", wait_until="networkidle")
            page.get_by_role("link", name="api").first.click()
            page.wait_for_url(f"**/deployments/deployment/{dep['id']}*")
            page.get_by_role("button", name="Run", exact=True).first.click()
            page.get_by_text("Custom run", exact=True).first.click()
            page.wait_for_url("**/run*")
            page.get_by_role("button", name="Submit").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "custom-run-form.png"), full_page=True)
            _fill(page, "source", source)
            _fill(page, "session_id", sid, nullable=True)
            _fill(page, "language", "en")
            page.get_by_role("button", name="Submit").click()
            # after submit the UI returns to the deployment page; the run is the one with our session
            page.wait_for_url(f"**/deployments/deployment/{dep['id']}?tab=Runs", timeout=60_000)
            runs = prefect_pg.post("/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}})
            mine = [r for r in runs if r["parameters"].get("session_id") == sid]
            assert len(mine) == 1, [r["parameters"] for r in runs]
            run = prefect_pg.wait_run(mine[0]["id"])
            page.reload(wait_until="networkidle")
            page.screenshot(path=str(tmp_path / "run-completed.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print("screenshot:", tmp_path / "failure.png")
            raise
        finally:
            browser.close()
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["deployment_id"] == dep["id"]
    assert run["parameters"]["source"] == source and run["parameters"]["session_id"] == sid
    assert run["parameters"]["language"] == "en"
    assert status_row(sid, {"COMPLETED"}).progress == 100
    assert (tmp_path / "run-completed.png").stat().st_size > 10_000


def _fill(page, label: str, value: str, nullable: bool = False) -> None:
    """The form renders each parameter under a label with its name (`… (Optional)` when it has a
    default); the input is the nearest one in the label's field container."""
    import re
    lab = page.locator("label").filter(has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$"))
    if not lab.count():
        raise AssertionError(f"no field for parameter {label!r}; labels: {page.locator('label').all_inner_texts()}")
    if nullable:  # `str | None`: a str/None switch first, then the input
        lab.first.locator("xpath=ancestor::*[.//button[normalize-space()='str']][1]").get_by_role(
            "button", name="str", exact=True).click()
    box = lab.first.locator("xpath=ancestor::*[.//input[not(@type='checkbox')] or .//textarea][1]")
    box.locator("input:not([type=checkbox]), textarea").first.fill(value)
