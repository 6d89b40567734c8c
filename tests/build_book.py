"""Build the HTML book into ``_build/html`` (what ``make book`` runs; the browser test reuses it).

Every chapter is executed; the build fails on any cell error (``execute.raise_on_error``) and on any
Sphinx warning (``-W -n --keep-going --all``: ``-W`` only sees pages re-read, hence ``--all``).

Executed chapters are cached by jupyter-cache (``execute_notebooks: cache``), keyed on each chapter's
code cells. The cache cannot see the code the chapters import, so it is emptied whenever ``sgdnotes``
or ``pyproject.toml`` changes; ``--force`` empties it unconditionally (every chapter executes again).
A stamp with a hash of all inputs lets the browser test reuse an up-to-date build.

Usage: ``python -m tests.build_book [--if-stale] [--force]``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
STAMP = ROOT / "_build" / ".book-inputs.sha256"
CACHE = ROOT / "_build" / ".jupyter_cache"
CACHE_STAMP = ROOT / "_build" / ".jupyter_cache.code-sha256"


def _hash(files) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        if f.is_file() and "node_modules" not in f.parts and not f.name.startswith(".nbmake-"):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def code_hash() -> str:
    """SHA-256 over what executed chapters depend on besides their own cells: the package, its pins and
    the replicate seed (``SGDNOTES_SEED``)."""
    seed = os.environ.get("SGDNOTES_SEED", "").strip()
    return hashlib.sha256((_hash([*ROOT.glob("sgdnotes/*.py"), ROOT / "pyproject.toml"]) + seed).encode()).hexdigest()


def inputs_hash() -> str:
    """SHA-256 over every file the HTML depends on (pages, package code, config, vendored JS list)."""
    return _hash([*ROOT.glob("book/**/*.md"), *ROOT.glob("book/*.bib"), *ROOT.glob("book/_ext/*.py"),
                  *ROOT.glob("sgdnotes/*.py"), ROOT / "pyproject.toml", ROOT / "_config.yml", ROOT / "_toc.yml",
                  ROOT / "book/vendor/package-lock.json"])


def is_fresh() -> bool:
    return STAMP.is_file() and STAMP.read_text().strip() == inputs_hash() and (HTML / "index.html").is_file()


def build(force: bool = False) -> None:
    """Run the strict Jupyter Book build; raise CalledProcessError if it fails.

    force: execute every chapter (empty the execution cache first); otherwise only chapters whose code
    cells changed since the last build execute, unless sgdnotes or the pins changed (then all do).
    """
    STAMP.unlink(missing_ok=True)
    digest, code = inputs_hash(), code_hash()
    if force or not CACHE_STAMP.is_file() or CACHE_STAMP.read_text().strip() != code:
        shutil.rmtree(CACHE, ignore_errors=True)
    CACHE_STAMP.parent.mkdir(parents=True, exist_ok=True)
    CACHE_STAMP.write_text(code + "\n")  # the cache now holds executions of this code only
    exe = Path(sys.executable).parent / "jupyter-book"
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    subprocess.run([str(exe), "build", str(ROOT), "-W", "-n", "--keep-going", "--all"], check=True, env=env)
    STAMP.write_text(digest + "\n")


if __name__ == "__main__":
    if "--if-stale" in sys.argv and is_fresh():
        print(f"HTML in {HTML} is up to date")
    else:
        build(force="--force" in sys.argv)
        print(f"HTML written to {HTML}/index.html")
