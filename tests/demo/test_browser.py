"""The demo in a real browser: headless Chromium from Debian driven by Playwright, against `hf-vqgan demo` servers of
tiny pipelines on 127.0.0.1. Each tab is used as a person would and screenshotted (into `DEMO_SCREENSHOT_DIR` when
set, e.g. docs/, else a temporary folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no system Chromium on PATH (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        # Playwright's own browser download cannot work offline: drive Debian's Chromium. As root it needs no sandbox.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=TIMEOUT_MS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("DEMO_SCREENSHOT_DIR")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 48x40 image of smooth blocks (not the model's size: the demo crops and resizes)."""
    blocks = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("uploads") / "photo.png"
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))).save(path)
    return path


def open_tab(page, url: str, name: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name=name).click()


def natural_sizes(page, selector: str, count: int) -> list[tuple[int, int]]:
    """Wait for `count` loaded images under `selector` and return their natural (width, height)."""
    images = page.locator(f"{selector} img")
    sync_api.expect(images).to_have_count(count)
    page.wait_for_function(
        "([s, n]) => { const im = document.querySelectorAll(s + ' img');"
        " return im.length === n && [...im].every(i => i.complete && i.naturalWidth > 0); }",
        arg=[selector, count],
    )
    return images.evaluate_all("images => images.map(i => [i.naturalWidth, i.naturalHeight])")


def upload(page, element_id: str, path: Path) -> None:
    page.locator(f"#{element_id} input[type=file]").set_input_files(str(path))


def test_generate_a_named_class_then_complete_and_reconstruct(demo_servers, page, photo, screenshots):
    url = demo_servers("class").url
    open_tab(page, url, "Generate")
    page.locator("#generate-class input").click()
    page.get_by_role("option", name="two").click()  # names from id2label, not indices
    page.locator("#generate-button").click()
    assert natural_sizes(page, "#generated", 4) == [[32, 32]] * 4
    page.screenshot(path=str(screenshots / "demo_generate.png"), full_page=True)
    sync_api.expect(page.locator("a[download], a[href*='tokens.json']").first).to_be_attached()

    open_tab(page, url, "Complete")
    upload(page, "complete-upload", photo)
    natural_sizes(page, "#kept-region", 1)  # the kept rows drawn on the input, before sampling
    page.locator("#complete-button").click()
    assert natural_sizes(page, "#completions", 4) == [[32, 32]] * 4
    page.screenshot(path=str(screenshots / "demo_complete.png"), full_page=True)

    open_tab(page, url, "Reconstruct")
    upload(page, "reconstruct-upload", photo)
    page.locator("#reconstruct-button").click()
    sync_api.expect(page.locator("#reconstruct-summary")).to_contain_text("PSNR")
    (strip,) = natural_sizes(page, "#reconstruct-strip", 1)
    assert strip[1] > 32 and strip[0] > 3 * strip[1] // 2  # three images side by side, enlarged
    natural_sizes(page, "#reconstruct-codes", 1)
    page.screenshot(path=str(screenshots / "demo_reconstruct.png"), full_page=True)

    open_tab(page, url, "About")
    page.locator("#usage-button").click()
    sync_api.expect(page.locator("#codebook-usage")).to_contain_text("Codebook usage")
    page.screenshot(path=str(screenshots / "demo_about.png"), full_page=True)


def test_a_bad_upload_shows_a_message_and_the_page_keeps_working(demo_servers, page, photo, tmp_path):
    url = demo_servers("class").url
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    open_tab(page, url, "Reconstruct")
    upload(page, "reconstruct-upload", notes)
    page.locator("#reconstruct-button").click()
    sync_api.expect(page.get_by_text("notes.png is not an image this demo can read").first).to_be_visible()
    assert page.get_by_text("Traceback").count() == 0
    open_tab(page, url, "Reconstruct")  # a fresh page: the file box holds the bad file
    upload(page, "reconstruct-upload", photo)
    page.locator("#reconstruct-button").click()
    sync_api.expect(page.locator("#reconstruct-summary")).to_contain_text("PSNR")


def test_unconditional_pipeline_has_no_class_picker(demo_servers, page):
    open_tab(page, demo_servers("uncond").url, "Generate")
    sync_api.expect(page.locator("#generate-class")).to_be_hidden()
    page.locator("#generate-button").click()
    assert natural_sizes(page, "#generated", 4) == [[32, 32]] * 4
    assert page.get_by_role("tab", name="Condition").count() == 0


def test_lowres_condition_shows_the_derived_map_next_to_samples(demo_servers, page, photo, screenshots):
    url = demo_servers("lowres").url
    page.goto(url)
    assert page.get_by_role("tab", name="Generate").count() == 0  # it cannot sample without a condition
    page.get_by_role("tab", name="Condition").click()
    upload(page, "condition-upload", photo)
    page.locator("#condition-button").click()
    assert natural_sizes(page, "#conditioned", 4) == [[32, 32]] * 4
    natural_sizes(page, "#condition-map", 1)
    page.screenshot(path=str(screenshots / "demo_condition.png"), full_page=True)
