"""The web UI in a real browser: headless Chromium (Debian's `chromium`, driven by playwright with executable_path;
no `playwright install`) against a real `tuner serve` on localhost over a seeded database. Screenshots are saved
in $TUNER_TEST_ARTIFACTS (default: the test's tmp folder).

Skipped when chromium or playwright is missing, unless TUNER_TEST_REQUIRE_BROWSER=1 (then a failure)."""

from __future__ import annotations

import io
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import seed
from test_serve_process import _free_port, serving

from tuner.store.db import open_database

REQUIRE_ENV = "TUNER_TEST_REQUIRE_BROWSER"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    reason = None
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install --no-install-recommends chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    assert path is not None
    return path


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TUNER_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[dict[str, int]]:
    db = open_database(f"sqlite:///{tmp_path / 'data' / 'tuner.db'}")
    try:
        ids = {"sweep": seed.seed_sweep(db, n_configs=20), "other_sweep": seed.seed_sweep(db, n_configs=8, tp=4, seed=1),
               "study": seed.seed_study(db, "seeded-study", 60)}
    finally:
        db.dispose()
    yield ids


@pytest.fixture
def page(tmp_path: Path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def test_pareto_chart_heat_map_export_and_compare_from_a_seeded_database(tmp_path, seeded, page, artifacts) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    with serving(tmp_path, port, "--cpu-workers", "0"):
        page.goto(base + "#/studies")
        page.click("text=seeded-study")
        page.wait_for_selector("#pareto-chart circle")
        assert page.locator("#pareto-chart circle").count() == 180  # 60 trials x 3 load steps
        assert page.locator("#best-config").inner_text().count("chunked-prefill-size") == 1
        assert page.locator("tr.trial").count() == 50  # the first page of 60
        page.click("text=next ›")
        page.wait_for_function("document.querySelectorAll('tr.trial').length === 10")
        page.screenshot(path=str(artifacts / "study-pareto.png"), full_page=True)

        page.goto(base + "#/configs")
        page.wait_for_selector("#configs")
        assert page.locator("#configs tbody tr").count() == 2
        page.click(f"a[href='#/sweep/{seeded['sweep']}']")
        page.wait_for_selector("#heatmap-chart rect.cell")
        assert page.locator("#heatmap-chart rect.cell").count() == 20 * len(seed.BATCH_SIZES)
        assert page.locator("#speedup-chart rect").count() == 2 * len(seed.BATCH_SIZES)
        page.screenshot(path=str(artifacts / "sweep-heatmap.png"), full_page=True)
        with page.expect_download() as download_info:
            page.click("#sweep-export")
        download = download_info.value
        assert download.suggested_filename.endswith(f"sweep{seeded['sweep']}.zip")
        names = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())).namelist()
        assert any(n.startswith("configs/triton_") for n in names) and any(n.startswith("vllm/") for n in names)

        page.goto(base + "#/configs")
        page.wait_for_selector("#configs")
        for box in page.locator("#configs input[type=checkbox]").all():
            box.check()
        page.click("#compare-picked")
        page.wait_for_selector("#compare-table")
        assert page.locator("#compare-table tbody tr").count() == len(seed.BATCH_SIZES)
        page.screenshot(path=str(artifacts / "compare.png"), full_page=True)


def test_a_job_started_from_the_form_is_listed_with_its_progress_and_can_be_cancelled(tmp_path, page, artifacts) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    with serving(tmp_path, port, "--cpu-workers", "0"):
        page.goto(base + "#/new?kind=kernel_sweep")
        page.wait_for_selector("#job-form")
        page.fill("input[name=model]", "GLM-4.7-FP8")
        page.fill("input[name=tp]", "8")
        page.fill("input[name=batch_sizes]", "1,64,256")
        page.click("#submit-job")
        page.wait_for_selector("#form-error:not(:empty)")  # no GPU here and no device named: said in one line
        assert "GPU" in page.locator("#form-error").inner_text()
        page.fill("input[name=device_name]", "NVIDIA H200")
        page.click("#submit-job")
        page.wait_for_selector("#units tbody tr")
        assert page.locator("#units tbody tr").count() == 6  # a first and a second pass per batch size
        page.goto(base + "#/jobs")
        page.wait_for_selector("tr[data-state=queued]")
        assert "0/6 done" in page.locator("tr[data-state=queued]").inner_text()
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("button.cancel")
        page.wait_for_selector("tr[data-state=cancelled]")
        page.screenshot(path=str(artifacts / "jobs.png"), full_page=True)


def test_a_flag_search_started_in_the_browser_runs_on_the_simulator_and_finishes(tmp_path, page, artifacts) -> None:  # type: ignore[no-untyped-def]
    from tuner.jobs import kinds

    if "flag_search" not in [k.name for k in kinds.all_kinds()]:
        pytest.skip("the flag_search job kind is not registered in this build (issue 10 adds it)")
    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    with serving(tmp_path, port, "--cpu-workers", "1"):
        page.goto(base + "#/new?kind=flag_search")
        page.wait_for_selector("#demo-preset")
        page.click("#demo-preset")
        page.wait_for_function("document.querySelector('input[name=model]').value !== ''")
        for name, value in {"trials": "3", "repeats": "0", "requests_per_step": "8", "max_load_steps": "2",
                            "time_scale": "50", "study": "browser-demo", "input_len": "512", "output_len": "32"}.items():
            page.fill(f"input[name={name}]", value)
        page.click("#submit-job")
        page.wait_for_selector(".job-state-text", state="attached")
        page.wait_for_selector(".job-state-text[data-state=running], .job-state-text[data-state=finished]",
                               state="attached", timeout=120_000)
        page.screenshot(path=str(artifacts / "flag-search-running.png"), full_page=True)
        page.wait_for_selector(".job-state-text[data-state=finished]", state="attached", timeout=400_000)
        assert "3/3 done" in page.locator("#job-head").inner_text()  # the baseline and two trials, one launch each
        page.wait_for_selector("#pareto-chart circle", timeout=30_000)
        assert page.locator("tr.trial").count() == 3
        page.screenshot(path=str(artifacts / "flag-search-finished.png"), full_page=True)
