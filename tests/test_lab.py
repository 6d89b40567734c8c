"""A chapter in JupyterLab, as a newcomer meets it: double-click opens a notebook, Run All works.

Starts the JupyterLab that ``make setup`` installs (with the shipped ``overrides.json`` that makes
Jupytext Notebook the default viewer of ``.md`` files) on 127.0.0.1, over a temporary copy of ``book/``
(so autosave can never rewrite a chapter), drives it with Debian's Chromium through Playwright,
double-clicks ``01_gradient_noise.md`` in the file browser, runs all cells from the Run menu, and checks
that a notebook panel opened, figures rendered, a live slider appeared and no cell printed an error.
Screenshots go to ``_build/screenshots/lab_*.png``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import build_book
from tests.test_html import FLAGS, SHOTS, _chromium

pytestmark = pytest.mark.browser

CHAPTER = "01_gradient_noise.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 over a copy of book/; yields its base URL."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(build_book.ROOT / "book", root / "book",
                    ignore=shutil.ignore_patterns("node_modules", "_static", ".nbmake-*", ".ipynb_checkpoints"))
    settings = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert settings.is_file(), f"{settings} is missing: `make setup` installs it from book/_lab/overrides.json"
    port = _free_port()
    exe = Path(sys.executable).parent / "jupyter"
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [str(exe), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--IdentityProvider.token=",
         "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root / 'book'}",
         "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not start: " + (root / "lab.log").read_text()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_chapter_opens_as_notebook_and_runs(lab):
    path = _chromium()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        offsite = []
        page.on("request", lambda r: offsite.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:", "ws://127.0.0.1")) else None)
        page.goto(f"{lab}/lab", wait_until="load")
        item = page.locator(".jp-DirListing-item", has_text=CHAPTER).first
        item.wait_for(state="visible", timeout=60000)
        item.dblclick()
        # a notebook panel, not a text editor, opened for the chapter
        panel = page.locator(".jp-NotebookPanel").first
        panel.wait_for(state="visible", timeout=60000)
        assert page.locator(".jp-FileEditor:visible").count() == 0, "the chapter opened in a text editor"
        # the notebook's cells are rendered and its kernel is idle (status bar: "Python 3 (ipykernel) | Idle")
        page.locator(".jp-NotebookPanel .jp-CodeCell").first.wait_for(state="attached", timeout=120000)
        page.wait_for_function("() => /\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget, #jp-main-statusbar')?.innerText || '')",
                               timeout=120000)
        page.screenshot(path=str(SHOTS / "lab_opened.png"))
        # Run -> Run All Cells, through the menu bar
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        # wait until no cell is queued or running ("[*]") and every code cell has an execution count
        page.wait_for_function(
            """() => {
                 const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt'));
                 return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
               }""", timeout=400000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / "lab_ran.png"))
        n_figs = page.locator(".jp-NotebookPanel .jp-OutputArea-output img").count()
        n_sliders = page.locator(".jp-NotebookPanel .widget-slider").count()
        errors = page.locator(".jp-NotebookPanel .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
                              " .jp-NotebookPanel .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        error_text = [errors.nth(i).inner_text()[:300] for i in range(errors.count())]
        # the slider is live: moving it changes the displayed frame
        slider = page.locator(".jp-NotebookPanel .widget-slider").first
        slider.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(SHOTS / "lab_slider.png"))
        browser.close()
    assert n_figs >= 3, f"expected the chapter's figures in the notebook, found {n_figs} images"
    assert n_sliders >= 1, "no live slider rendered in the notebook"
    assert not [e for e in error_text if "Traceback" in e or "Error" in e], f"cells printed errors: {error_text}"
    assert not offsite, f"JupyterLab requested off-machine URLs: {offsite[:5]}"
