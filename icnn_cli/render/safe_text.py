"""One function that makes untrusted text safe to print: control characters become escapes.

A checkpoint is untrusted input: a key such as ``"\\x1b[2J"`` would clear the
screen of whoever inspects it, ``"\\x1b]52;..."`` (OSC 52) could write their
clipboard, and a newline would split one row into two that read as two leaves.
Rich markup is no concern (cells are ``Text``, shown literally); control
characters are. JSON needs none of this: its own escaping keeps the exact string.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0, DEL and C1 controls, and the Unicode "format" characters that reorder or hide
# text (bidi overrides such as U+202E, zero-width spaces): all shown as escapes.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` as a string with every control or invisible format character escaped.

    >>> visible("a\\x1b[2Jb\\nc")
    'a\\\\x1b[2Jb\\\\nc'
    """
    string = str(text)
    if string.isprintable() and not _UNSAFE.search(string):
        return string
    return _UNSAFE.sub(_escape, string)
