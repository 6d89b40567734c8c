"""Sphinx extension: render ``sgdnotes`` docstrings for the API reference page.

The package's docstrings are written as plain text for ``help()`` readers: they use ``|x|`` for
absolute values, ``*`` for products and powers, and indented continuation lines. reStructuredText
reads those as substitutions, emphasis and block quotes. Before autodoc parses a docstring this hook
keeps each indented run of lines verbatim (a literal block) and escapes ``|``, ``*``, ``_`` and
backslashes in the prose outside double-backtick literals, so the strict build does not depend on
docstring markup.
"""

from __future__ import annotations

import re

_LITERAL = re.compile(r"(``.+?``)", re.S)
_SPECIAL = re.compile(r"([|*`\\]|_(?=\W|$))")


def _escape(text: str) -> str:
    parts = _LITERAL.split(text)
    return "".join(p if i % 2 else _SPECIAL.sub(r"\\\1", p) for i, p in enumerate(parts))


def _plain_docstring(app, what, name, obj, options, lines):
    if not name.startswith("sgdnotes"):
        return
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


def setup(app):
    app.connect("autodoc-process-docstring", _plain_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
