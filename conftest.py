"""Collect the book's MyST-Markdown chapters (``book/*.md`` with a jupytext header) as nbmake tests.

nbmake only collects ``.ipynb`` files, so each chapter is converted with jupytext into a hidden
``book/.nbmake-<name>.ipynb`` (gitignored) next to the source -- the chapter then runs with the
same working directory as in the book build -- and the file is deleted after the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BOOK = Path(__file__).parent / "book"


def is_chapter(path: Path) -> bool:
    """A book page that holds code: MyST notebook front matter with a kernelspec."""
    if path.suffix != ".md" or path.parent != BOOK or path.name.startswith("."):
        return False
    head = path.read_text(encoding="utf-8")[:600]
    return head.startswith("---") and "format_name: myst" in head and "kernelspec:" in head


class ChapterFile(pytest.File):
    def collect(self):
        import jupytext
        from nbmake.pytest_items import NotebookItem

        notebook = self.path.parent / f".nbmake-{self.path.stem}.ipynb"
        jupytext.write(jupytext.read(self.path), notebook)
        item = NotebookItem.from_parent(self, filename=str(notebook))
        item.add_marker(pytest.mark.chapter)
        yield item

    def teardown(self):
        (self.path.parent / f".nbmake-{self.path.stem}.ipynb").unlink(missing_ok=True)


def pytest_collect_file(file_path: Path, parent):
    if is_chapter(file_path):
        return ChapterFile.from_parent(parent, path=file_path)
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "chapter: a book chapter executed through nbmake")
