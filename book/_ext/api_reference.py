"""Sphinx extension: the API reference of ``sgdnotes`` (book/api.md) and the links to it.

1. Docstrings. 
The package's docstrings are written as plain text for ``help()`` readers: they use ``|x|`` for
absolute values, ``*`` for products and powers, and indented continuation lines. reStructuredText
reads those as substitutions, emphasis and block quotes. Before autodoc parses a docstring this hook
keeps each indented run of lines verbatim (a literal block) and escapes ``|``, ``*``, ``_`` and
backslashes in the prose outside double-backtick literals, so the strict build does not depend on
docstring markup.

2. Links from the chapters. Each chapter page ends with a generated section listing, as links into
the reference, the ``sgdnotes`` functions and classes its code uses -- those it introduces (first use
in the book, in chapter order) and those it reuses. The names are read from the code cells
(``module.name`` after ``from sgdnotes import module``, and ``from sgdnotes.module import name``), so
the list cannot drift from the code; with ``-n`` an entry that names no documented object fails the
build.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

_LITERAL = re.compile(r"(``.+?``|:[\w:]+:`[^`]+`)", re.S)  # literals and roles pass through
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Attributes|Fields|Keyword Args):\s*$")
_TABLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_SPECIAL = re.compile(r"([|*`\\]|_(?=\W|$))")


def _escape(text: str) -> str:
    parts = _LITERAL.split(text)
    return "".join(p if i % 2 else _SPECIAL.sub(r"\\\1", p) for i, p in enumerate(parts))


def _plain_docstring(app, what, name, obj, options, lines):
    if not name.startswith("sgdnotes"):
        return
    # a reST simple table (rows between "=====  =====" borders) is kept verbatim as a literal block
    borders = [i for i, line in enumerate(lines) if _TABLE_BORDER.match(line)]
    if len(borders) >= 2:
        a, b = borders[0], borders[-1]
        lines[a:b + 1] = ["::", ""] + ["    " + line for line in lines[a:b + 1]] + [""]
    # split into paragraphs of prose and indented blocks
    segments: list[tuple[str, list[str]]] = []
    for line in lines:
        kind = "blank" if not line.strip() else ("block" if line[:1] in " \t" else "prose")
        if kind == "blank" and segments and segments[-1][0] == "block":
            segments[-1][1].append("")
            continue
        if segments and segments[-1][0] == kind:
            segments[-1][1].append(line)
        else:
            segments.append((kind, [line]))
    out: list[str] = []
    for kind, seg in segments:
        if kind == "prose":
            text = "\n".join(seg)
            if text.rstrip().endswith("::"):
                text = text.rstrip()[:-2].rstrip()
            out.extend(_escape(text).split("\n"))
        elif kind == "block":
            while seg and not seg[-1].strip():
                seg.pop()
            if out and _SECTION.match(out[-1]):
                # a Google-style section (Args:, Returns:, ...): napoleon turns it into a field list
                out.extend(_escape("\n".join(seg)).split("\n"))
                out.append("")
                continue
            if out and out[-1].strip():
                out[-1] += " ::"
            else:
                out.append("::")
            out.append("")
            out.extend(seg)
            out.append("")
        else:
            out.extend(seg)
    lines[:] = out


_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
_IMPORT_MODS = re.compile(r"^from sgdnotes import ([\w, ()]+)$", re.M)
_IMPORT_NAMES = re.compile(r"^from sgdnotes\.(\w+) import ([\w, ()]+)$", re.M)


def sgdnotes_names(text: str) -> list[str]:
    """``module.name`` of every public sgdnotes function/class the code cells of a MyST notebook use."""
    code = "\n".join(_CODE_CELL.findall(text))
    found: list[str] = []

    def add(mod: str, name: str):
        try:
            obj = getattr(importlib.import_module(f"sgdnotes.{mod}"), name)
        except (ImportError, AttributeError):
            return
        obj = inspect.unwrap(obj)  # functools.lru_cache / wraps
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            return
        if getattr(obj, "__module__", "") != f"sgdnotes.{mod}":
            return  # re-exported from elsewhere: documented (and linked) under its own module
        if f"{mod}.{name}" not in found:
            found.append(f"{mod}.{name}")

    for group in _IMPORT_MODS.findall(code):
        for mod in re.findall(r"\w+", group):
            for name in re.findall(rf"\b{mod}\.(\w+)", code):
                add(mod, name)
    for mod, group in _IMPORT_NAMES.findall(code):
        for name in re.findall(r"\w+", group):
            add(mod, name)
    return sorted(found)


def _chapter_files(srcdir: Path) -> list[Path]:
    return sorted((srcdir / "book").glob("[0-9][0-9]_*.md"))


def _api_section(app, docname, source):
    if not re.fullmatch(r"book/\d\d_\w+", docname):
        return
    srcdir = Path(app.srcdir)
    seen: set[str] = set()
    for path in _chapter_files(srcdir):
        names = sgdnotes_names(path.read_text(encoding="utf-8"))
        if path.stem == docname.split("/")[-1]:
            new = [n for n in names if n not in seen]
            old = [n for n in names if n in seen]
            break
        seen.update(names)
    else:
        return
    if not (new or old):
        return

    def links(ns):
        return ", ".join(f"{{py:obj}}`{n} <sgdnotes.{n}>`" for n in ns)

    text = "\n\n## `sgdnotes` in this chapter\n\n"
    text += "Generated from the code cells above; each name links to the {ref}`API reference <api>`.\n\n"
    if new:
        text += f"Introduced here: {links(new)}.\n\n"
    if old:
        text += f"Used again from earlier chapters: {links(old)}.\n"
    source[0] = source[0].rstrip("\n") + text


def _docstring_reference(app, env, node, contnode):
    """A role inside a docstring that names no documented object (a module constant, a private helper)
    renders as plain code on the API page instead of failing the build; links from the chapters stay strict."""
    if node.get("refdomain") == "py" and node.get("refdoc") == "book/api":
        return contnode
    return None


def setup(app):
    app.connect("missing-reference", _docstring_reference)
    # before napoleon (priority 500), which turns the Google-style sections into field lists
    app.setup_extension("sphinx.ext.napoleon")
    app.connect("autodoc-process-docstring", _plain_docstring, priority=400)
    app.connect("source-read", _api_section)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
