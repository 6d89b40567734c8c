"""Build the HTML book into ``_build/html`` (what ``make book`` runs; the browser test reuses it).

Every chapter is executed; the build fails on any cell error (``execute.raise_on_error``) and on any
Sphinx warning (``-W -n --keep-going --all``: ``-W`` only sees pages re-read, hence ``--all``).
A stamp with a hash of all inputs lets the browser test reuse an up-to-date build.

Usage: ``python -m tests.build_book [--if-stale]``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
STAMP = ROOT / "_build" / ".book-inputs.sha256"


def inputs_hash() -> str:
    """SHA-256 over every file the HTML depends on (pages, package code, config, vendored JS list)."""
    files = sorted(
        [*ROOT.glob("book/**/*.md"), *ROOT.glob("book/*.bib"), *ROOT.glob("sgdnotes/*.py"),
         ROOT / "_config.yml", ROOT / "_toc.yml", ROOT / "book/vendor/package-lock.json"]
    )
    h = hashlib.sha256()
    for f in files:
        if f.is_file() and "node_modules" not in f.parts and not f.name.startswith(".nbmake-"):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def is_fresh() -> bool:
    return STAMP.is_file() and STAMP.read_text().strip() == inputs_hash() and (HTML / "index.html").is_file()


def build() -> None:
    """Run the strict Jupyter Book build; raise CalledProcessError if it fails."""
    STAMP.unlink(missing_ok=True)
    digest = inputs_hash()
    exe = Path(sys.executable).parent / "jupyter-book"
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    subprocess.run([str(exe), "build", str(ROOT), "-W", "-n", "--keep-going", "--all"], check=True, env=env)
    STAMP.write_text(digest + "\n")


if __name__ == "__main__":
    if "--if-stale" in sys.argv and is_fresh():
        print(f"HTML in {HTML} is up to date")
    else:
        build()
        print(f"HTML written to {HTML}/index.html")
