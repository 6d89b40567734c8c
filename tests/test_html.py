"""The built HTML in a real browser: math renders, figures load, the slider works without a kernel,
nothing is requested from outside 127.0.0.1, and the console stays free of errors.

Builds the book (or reuses an up-to-date build, see ``tests/build_book.py``), serves ``_build/html``
on 127.0.0.1 and drives Debian's Chromium (``/usr/bin/chromium``) through Playwright. Screenshots
are saved under ``_build/screenshots/``. Without Chromium the test is skipped with a reason, except
under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests import build_book

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = build_book.ROOT / "_build" / "screenshots"
CHAPTER = "book/01_gradient_noise.html"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
]


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if path:
        return path
    reason = f"Chromium not found at {CHROMIUM} or on PATH (install Debian's 'chromium' package)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + "; CI must run the browser test")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site():
    """Serve an up-to-date _build/html on 127.0.0.1; yields the base URL."""
    if not build_book.is_fresh():
        build_book.build(force=True)  # the test's build executes every chapter
    handler = functools.partial(_QuietHandler, directory=str(build_book.HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        yield b
        b.close()


def _open(browser, url):
    """Open url; return (page, requests, console errors) with listeners attached before navigation."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, requests, errors


def _offsite(requests, base):
    host = urlparse(base).hostname
    return [u for u in requests if urlparse(u).scheme not in ("data", "blob") and urlparse(u).hostname != host]


def test_chapter_one_in_browser(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, requests, errors = _open(browser, f"{site}/{CHAPTER}")

    # Math: MathJax typeset the page (CHTML output), without errors.
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30000)
    page.evaluate("() => MathJax.startup.promise")
    n_math = page.locator("mjx-container").count()
    assert n_math >= 10, f"expected rendered math on the chapter page, found {n_math} mjx-container elements"
    assert page.locator("mjx-merror").count() == 0, "MathJax reported a TeX error"

    # Figures: every static image loaded (non-zero natural size).
    imgs = page.evaluate(
        "() => Array.from(document.querySelectorAll('article img')).map(i => [i.src, i.complete, i.naturalWidth])"
    )
    static = [i for i in imgs if not i[0].startswith("blob:")]
    assert len(static) >= 3, f"expected the chapter's figures, found {len(static)} images"
    broken = [src for src, done, width in static if not (done and width > 0)]
    assert not broken, f"images that failed to load: {broken}"

    # Slider: the widget manager rendered it; moving it changes the displayed frame.
    slider = page.locator(".widget-slider").first
    slider.wait_for(state="visible", timeout=30000)
    slider.scroll_into_view_if_needed()

    def shown_frame():
        return page.evaluate(
            """() => { const ims = Array.from(document.querySelectorAll('.widget-image'))
                         .filter(i => i.offsetParent !== null && i.naturalWidth > 0);
                       return ims.length ? ims[0].src : null; }"""
        )

    before = shown_frame()
    assert before is not None, "no widget image is displayed next to the slider"
    page.screenshot(path=str(SHOTS / "chapter1_slider_before.png"), full_page=False)
    track = page.locator(".widget-slider .noUi-target").first
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    page.mouse.click(box["x"] + 0.97 * box["width"], box["y"] + box["height"] / 2)  # jump to the last value
    page.wait_for_timeout(500)
    after = shown_frame()
    page.screenshot(path=str(SHOTS / "chapter1_slider_after.png"), full_page=False)
    assert after is not None and after != before, "moving the slider did not change the displayed image"
    page.locator(".widget-slider").first.locator("xpath=..").screenshot(path=str(SHOTS / "chapter1_slider_widget.png"))
    page.screenshot(path=str(SHOTS / "chapter1_full.png"), full_page=True)

    assert not _offsite(requests, site), f"requests left the machine: {_offsite(requests, site)}"
    assert not errors, f"browser console errors: {errors}"


def test_every_page_offline_and_clean(site, browser):
    """Each page of the book loads with no off-machine request and no console error."""
    pages = sorted(p.relative_to(build_book.HTML).as_posix() for p in build_book.HTML.glob("book/*.html"))
    assert pages, "no pages were built"
    for rel in pages:
        page, requests, errors = _open(browser, f"{site}/{rel}")
        page.screenshot(path=str(SHOTS / (Path(rel).stem + ".png")), full_page=False)
        page.close()
        assert not _offsite(requests, site), f"{rel}: requests left the machine: {_offsite(requests, site)}"
        assert not errors, f"{rel}: browser console errors: {errors}"


def test_executed_notebook_download(site, browser):
    """Each chapter's download menu offers its executed notebook, served locally, with outputs in it."""
    import json

    page, requests, errors = _open(browser, f"{site}/{CHAPTER}")
    link = page.locator("a.btn-download-notebook-button, a[href$='01_gradient_noise.ipynb']").first
    href = link.get_attribute("href")
    assert href and href.endswith("01_gradient_noise.ipynb"), f"no .ipynb link in the download menu: {href}"
    resp = page.request.get(page.url.rsplit("/", 1)[0] + "/" + href)
    assert resp.ok, f"the executed notebook link is broken: HTTP {resp.status}"
    nb = json.loads(resp.body())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    with_outputs = [c for c in code if c.get("outputs")]
    assert len(with_outputs) >= len(code) // 2, (
        f"the downloaded notebook is not executed: {len(with_outputs)} of {len(code)} code cells have outputs")
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    page.close()
    assert not _offsite(requests, site) and not errors
    # every chapter page offers one
    for html in sorted(build_book.HTML.glob("book/0*.html")):
        text = html.read_text(encoding="utf-8")
        assert f"{html.stem}.ipynb" in text, f"{html.name} has no executed-notebook download"
        assert (build_book.HTML / "_sources" / "book" / f"{html.stem}.ipynb").is_file()


def test_api_reference_linked_from_chapters(site, browser):
    """The API reference documents sgdnotes, and each chapter links the functions its code uses to it."""
    import sys

    sys.path.insert(0, str(build_book.ROOT / "book" / "_ext"))
    from api_reference import sgdnotes_names

    api = (build_book.HTML / "book" / "api.html").read_text(encoding="utf-8")
    page, requests, errors = _open(browser, f"{site}/{CHAPTER}")
    link = page.locator("a[href*='api.html#sgdnotes.sgd.run_sgd']").first
    link.click()
    page.wait_for_timeout(500)
    assert page.url.endswith("api.html#sgdnotes.sgd.run_sgd"), page.url
    assert page.locator("[id='sgdnotes.sgd.run_sgd']").is_visible()
    page.screenshot(path=str(SHOTS / "api_run_sgd.png"), full_page=False)
    page.close()
    assert not _offsite(requests, site) and not errors
    for md in sorted((build_book.ROOT / "book").glob("[0-9][0-9]_*.md")):
        html = (build_book.HTML / "book" / f"{md.stem}.html").read_text(encoding="utf-8")
        names = sgdnotes_names(md.read_text(encoding="utf-8"))
        assert names, f"{md.name}: no sgdnotes calls found in its code cells"
        for name in names:
            assert f'id="sgdnotes.{name}"' in api, f"sgdnotes.{name} is missing from the API reference"
            assert f"api.html#sgdnotes.{name}" in html, f"{md.stem}.html does not link sgdnotes.{name}"
