"""The reference web page in a real browser (Debian's Chromium through Playwright) against the local
stack (tests/web_stack.py): the Edge Function under Deno, SeaweedFS as S3 with CORS, the Supabase
stand-ins on real PostgreSQL behind one project URL, a Prefect server and worker, `vibeinsight web`.
The page runs the bundle of the TypeScript client (clients/web/app.js) and the real supabase-js."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import ffmpeg
from tests.waiting import wait_for
from tests.web_stack import BUCKET, EMAIL, PASSWORD, web_stack

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
FAST = "?poll_ms=500&backoff_ms=500&language=en"  # test pacing: polling and Realtime back-off in half seconds
RUN_S = 300_000  # ms a run may take on a loaded machine


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server):
    with web_stack(tmp_path_factory.mktemp("web-e2e"), s3_server) as st:
        yield st


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt package chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def recording(tmp_path_factory, audio) -> Path:
    """A 6 MB recording: 11 s of speech, then quiet noise (48 kHz stereo PCM): two parts of the multipart upload."""
    src = tmp_path_factory.mktemp("rec") / "standup.wav"
    ffmpeg("-i", str(audio / "jfk.flac"), "-f", "lavfi", "-i", "anoisesrc=a=0.002:d=22:r=48000",
           "-filter_complex", "[0]aresample=48000,aformat=channel_layouts=stereo[a];"
           "[1]aformat=channel_layouts=stereo[b];[a][b]concat=n=2:v=0:a=1", "-c:a", "pcm_s16le", str(src))
    assert 5 * 2**20 < src.stat().st_size < 10 * 2**20
    return src


def open_page(browser, stack, locale: str = "en-US", query: str = FAST, sign_in: bool = False):
    """The page in a fresh browser profile, signed in with a pasted token (or through the sign-in form)."""
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.goto(stack.page_url + query)
    page.wait_for_selector("body[data-ready='1']")
    if sign_in:
        page.fill("#signin-form input[name=email]", EMAIL)
        page.fill("#signin-form input[name=password]", PASSWORD)
        page.click("#signin-form button[type=submit]")
        page.wait_for_function("() => document.querySelector('[data-testid=who]').textContent !== ''")
    else:
        page.fill("[data-testid=token]", stack.token)
    return page


def part_puts(page) -> list[int]:
    """Part numbers of the S3 part PUTs the page sends, in order."""
    parts: list[int] = []
    page.on("request", lambda r: r.method == "PUT" and (m := re.search(r"[?&]partNumber=(\d+)", r.url))
            and parts.append(int(m.group(1))))
    return parts


def wait_status(page, status: str, timeout_ms: int = RUN_S) -> None:
    page.wait_for_selector(f"[data-testid=status][data-status='{status}']", timeout=timeout_ms)


def progress(page) -> int:
    return int(page.get_attribute("[data-testid=progress]", "aria-valuenow"))


def test_a_6_mb_recording_uploads_in_parts_completes_and_its_transcript_shows(stack, browser, recording):
    page = open_page(browser, stack)
    parts = part_puts(page)
    seen: list[tuple[str, int]] = []
    page.expose_function("seen", lambda stage, value: seen.append((stage, int(value))))
    page.evaluate("""() => new MutationObserver(() => window.seen(
        document.querySelector('[data-testid=stage]').dataset.stage,
        document.querySelector('[data-testid=progress]').getAttribute('aria-valuenow'))).observe(
        document.querySelector('[data-testid=progress]'), {attributes: true})""")
    page.set_input_files("[data-testid=file]", str(recording))
    page.click("[data-testid=start]")
    wait_status(page, "COMPLETED")
    assert sorted(parts) == [1, 2]  # multipart: two parts, each sent once
    assert progress(page) == 100
    assert page.get_attribute("[data-testid=stage]", "data-stage") == "done"
    # the bar moved through the upload and the stages; the run's part never went back
    stages = [s for s, _ in seen]
    assert "upload" in stages and any(s not in ("upload", "queued") for s in stages), seen
    run = [v for s, v in seen if s not in ("upload",)]
    assert run == sorted(run), seen
    lines = page.locator("[data-testid=transcript] li")
    lines.first.wait_for(timeout=60_000)  # the result document is fetched after the row says COMPLETED
    assert lines.count() >= 1
    text = " ".join(lines.all_inner_texts())
    assert "country" in text.lower()
    assert re.match(r"^\d\d:\d\d\.\d–\d\d:\d\d\.\d", lines.first.inner_text())  # times shown
    assert page.locator("[data-testid=error]").is_hidden()


def test_reloading_mid_upload_resumes_without_sending_finished_parts_again(stack, browser, recording, s3_server):
    page = open_page(browser, stack, query=FAST + "&parallel=2")
    parts = part_puts(page)
    held, hold = [], [True]
    # part 2 never reaches S3 before the reload: held until the page goes away (the navigation cancels it)
    page.route(re.compile(r".*[?&]partNumber=2(&.*)?$"),
               lambda route: held.append(route) if hold[0] else route.continue_())
    page.set_input_files("[data-testid=file]", str(recording))
    with page.expect_response(lambda r: r.request.method == "PUT" and "partNumber=1" in r.url, timeout=60_000):
        page.click("[data-testid=start]")
    assert held, "part 2 was not sent in parallel"
    page.reload()  # mid-upload: part 1 is in S3, part 2 never arrived
    hold[0] = False
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("[data-testid=resume]").is_visible()  # the page says how to resume
    page.set_input_files("[data-testid=file]", str(recording))  # a browser forgets the file on reload
    page.click("[data-testid=start]")
    page.wait_for_selector("[data-testid=stage]:not([data-stage='upload']):not([data-stage=''])", timeout=60_000)
    assert parts.count(1) == 1, parts  # part 1 was not sent again
    assert parts.count(2) == 2, parts  # the held one, then the resumed one
    wait_status(page, "COMPLETED")
    # the object S3 holds is the file, byte for byte
    client = s3_server.block(BUCKET).client()
    objects = [o for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"uploads/{stack.user}/").get("Contents", [])
               if o["Size"] == recording.stat().st_size]
    bodies = [client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in objects]
    assert recording.read_bytes() in bodies


def test_with_realtime_stopped_mid_run_the_page_keeps_moving_by_polling_and_switches_back(stack, browser, recording):
    def polls() -> int:
        return sum(1 for m, p in stack.gateway.requests if m == "GET" and p.startswith("/rest/v1/processing_status"))

    page = open_page(browser, stack)
    page.set_input_files("[data-testid=file]", str(recording))
    page.click("[data-testid=start]")
    page.wait_for_selector("[data-testid=status][data-channel='realtime']", timeout=120_000)
    # A first outage early in the run: the page polls the row, then joins Realtime again when it returns
    # (checked while the run is young, so a run that ends first cannot hide a page that never rejoins).
    joins = len(stack.realtime.joins)
    stack.gateway.realtime_down()
    page.wait_for_selector("[data-testid=status][data-channel='polling']", timeout=30_000)
    before = polls()
    wait_for(lambda: polls() > before, 30, 0.2, "a REST read of the row while Realtime is down")
    stack.gateway.realtime_up()
    page.wait_for_selector("[data-testid=status][data-channel='realtime']", timeout=60_000)
    assert len(stack.realtime.joins) > joins, "the page joined Realtime again"
    # A second outage: the page keeps moving on the rows it reads over REST alone.
    stack.gateway.realtime_down()
    page.wait_for_selector("[data-testid=status][data-channel='polling']", timeout=30_000)
    before = polls()
    shown = (page.get_attribute("[data-testid=stage]", "data-stage"), progress(page))
    page.wait_for_function("""([stage, value]) => {
        const s = document.querySelector('[data-testid=stage]').dataset.stage;
        const v = Number(document.querySelector('[data-testid=progress]').getAttribute('aria-valuenow'));
        return s !== stage || v !== value; }""", arg=list(shown), timeout=RUN_S)
    assert page.get_attribute("[data-testid=status]", "data-channel") == "polling"
    assert polls() > before
    stack.gateway.realtime_up()
    wait_status(page, "COMPLETED")
    page.locator("[data-testid=transcript] li").first.wait_for(timeout=60_000)


def test_joins_refused_by_realtimes_rate_limits_are_retried_as_each_limit_asks(stack, browser, recording, request):
    """Realtime refuses a join over its rate limits with a reason (tests/fake_realtime.py): for
    too_many_joins the page joins the channel's topic again later, on the same socket; for
    too_many_connections it drops the socket and joins on a new one. It then follows the run over
    Realtime to its end. (The decisions themselves: clients/js/src/realtime.ts and its unit tests.)"""
    refused = ["ClientJoinRateLimitReached: Too many joins per second",
               "ConnectionRateLimitReached: Too many connected users"]
    seen = len(stack.realtime.join_log)
    stack.realtime.refuse_joins = list(refused)
    request.addfinalizer(stack.realtime.refuse_joins.clear)  # none left over for the module's next test
    page = open_page(browser, stack)
    errors: list[str] = []  # e.g. realtime-js refusing a second join of one channel instance
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_input_files("[data-testid=file]", str(recording))
    page.click("[data-testid=start]")
    # before the run can end (the page then stops following): Realtime joined after both refusals
    wait_for(lambda: any(j.outcome == "ok" for j in stack.realtime.join_log[seen:]) or errors, 60, 0.2,
             "a join after the refused ones")
    assert not errors, (errors, stack.realtime.join_log[seen:])
    joins = [j for j in stack.realtime.join_log[seen:] if j.topic.startswith("realtime:processing_status:")]
    assert [j.outcome for j in joins] == [*refused, "ok"], joins
    assert len({j.topic for j in joins}) == 1, joins  # one session's channel throughout
    assert joins[1].socket == joins[0].socket, joins  # too_many_joins: the same socket, joined again later
    assert joins[2].socket != joins[1].socket, joins  # too_many_connections: a new socket
    wait_status(page, "COMPLETED")
    assert not errors, errors


def test_a_rejected_recording_shows_its_fixed_sentence_in_japanese(stack, browser, tmp_path):
    from vibeinsight.errors import MESSAGES

    bad = tmp_path / "録音.wav"
    bad.write_bytes(b"RIFF" + os.urandom(60_000))
    page = open_page(browser, stack, locale="ja-JP", query="?poll_ms=500")
    assert page.inner_text("[data-testid=start]") == "アップロードして処理"
    page.set_input_files("[data-testid=file]", str(bad))
    page.click("[data-testid=start]")
    wait_status(page, "FAILED")
    error = page.locator("[data-testid=error]")
    error.wait_for(state="visible")
    code = error.get_attribute("data-code")
    assert code in ("not_audio", "corrupt")
    assert error.inner_text() == MESSAGES[code][1]
    assert page.inner_text("[data-testid=status]") == "失敗"


def test_a_file_the_function_refuses_shows_its_sentence_in_english(stack, browser, tmp_path):
    """Signed in through Supabase Auth (the form), a text file: the function refuses it before any upload."""
    from vibeinsight.errors import MESSAGES

    notes = tmp_path / "notes.txt"
    shutil.copy(__file__, notes)
    page = open_page(browser, stack, sign_in=True)
    assert page.inner_text("[data-testid=who]") == "Signed in"
    assert page.input_value("[data-testid=token]") == ""
    page.set_input_files("[data-testid=file]", str(notes))
    page.click("[data-testid=start]")
    error = page.locator("[data-testid=error]")
    error.wait_for(state="visible", timeout=30_000)
    assert error.get_attribute("data-code") == "unsupported_type"
    assert error.inner_text() == MESSAGES["unsupported_format"][0]
