"""Sphinx extension: keep the built book self-contained and its browser console clean.

* ipywidgets' HTML manager typesets widget labels through the MathJax 2 API
  (``MathJax.Hub.Queue``), while the book serves MathJax 3: a small shim maps that call onto
  ``MathJax.typesetPromise`` (installed on the config object and again once MathJax has started).
* require.js resolves the widget manager's own URL -- and from it the fonts it loads -- against
  its ``baseUrl``: a global ``require`` config points that at ``_static/vendor/npm/``.
* sphinx-thebe registers its inline configuration script once per read phase, so a page can carry
  it twice (``THEBE_JS_URL`` declared twice is a console error): identical scripts are dropped.
* Each chapter page offers its *executed* notebook (outputs included) in the download menu next to
  the ``.md`` source: myst-nb writes it to ``_build/jupyter_execute``; it is copied into ``_sources``
  (sphinx-book-theme does this only when a launch service such as Binder is configured).
"""

from __future__ import annotations

import shutil
from pathlib import Path

MATHJAX_V2_SHIM = """(function () {
  var hub = { Queue: function (job) {
    var el = job && job[2], mj = window.MathJax;
    if (el && mj && mj.typesetPromise) { mj.typesetPromise([el]).catch(function () {}); }
  } };
  var cfg = window.MathJax || {};
  var startup = cfg.startup || {};
  var ready = startup.ready;
  startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = hub;
  };
  cfg.startup = startup;
  cfg.Hub = hub;
  window.MathJax = cfg;
})();"""


REQUIRE_CONFIG = (
    'var require = {baseUrl: (document.documentElement.dataset.content_root || "") + "_static/vendor/npm/"};'
)


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # a body-only script may carry filename None or "" depending on who added it
        key = (getattr(js, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _executed_notebook(app, pagename, templatename, context, doctree):
    source = context.get("sourcename") or ""
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not source.endswith((".md", ".md.txt")) or not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    cfg = getattr(app.env, "mystnb_config", None)
    if cfg is not None and cfg.execution_mode == "cache":
        # in cache mode myst-nb writes the notebook without its outputs: merge them from jupyter-cache
        import nbformat
        from jupyter_cache import get_cache

        nb = nbformat.read(str(executed), as_version=4)
        try:
            _, nb = get_cache(cfg.execution_cache_path).merge_match_into_notebook(nb)
        except KeyError:  # not cached (the page failed to execute): offer the notebook as written
            pass
        nbformat.write(nb, str(target))
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # priority 800: after Sphinx's inline ``window.MathJax = {...}`` config (500), before page load
    app.add_js_file(None, body=MATHJAX_V2_SHIM, priority=800)
    # before require.js (myst-nb adds it at the default priority 500)
    app.add_js_file(None, body=REQUIRE_CONFIG, priority=200)
    # early: html-page-context is emitted with emit_firstresult, so a later handler may never run
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    # before sphinx-book-theme builds the download menu (priority 501)
    app.connect("html-page-context", _executed_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
