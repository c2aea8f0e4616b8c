"""Names are data, never markup: file and folder names made safe for a terminal, Markdown and CSV.

A folder name can hold anything but `/` and NUL: escape sequences (a terminal title change, a screen clear),
Markdown table syntax and HTML, a spreadsheet formula. Each writer that shows names passes them through
the one function for its medium.
"""

from __future__ import annotations

import re

# C0 and C1 control characters, DEL, and the Unicode marks that reorder or hide text on a terminal
# (bidirectional overrides and isolates, zero-width characters, line and paragraph separators).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(character: re.Match) -> str:
    code = ord(character.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control or invisible character shown as \\xNN or \\uNNNN, so printing it on a
    terminal shows the name and never acts on the terminal."""
    return _UNPRINTABLE.sub(_escape, text)


def markdown_cell(text: str) -> str:
    """`text` for a Markdown table cell: shown as written, never as table syntax, emphasis, a link or HTML."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", printable(text))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def csv_cell(value: object) -> object:
    """A CSV value a spreadsheet shows as text: a string that would start a formula (= + - @, or a tab or
    carriage return before one) gets a leading apostrophe, as OWASP recommends; other values are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
