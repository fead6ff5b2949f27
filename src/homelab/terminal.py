"""Text from the cluster made safe to print on an operator's terminal.

Labels, annotations and silence comments come from anyone who can reach Alertmanager's API. Printed
raw, an escape sequence in one could rewrite the screen (clear it, move the cursor, recolour or hide
a row, set the window title) and a newline or a bidirectional override could forge or reorder rows.
Every such character is shown as its Python escape instead (ESC -> ``\\x1b``), so what an operator
reads is what was sent.
"""

from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """``text`` with every control, format, surrogate, private-use or unassigned character escaped."""
    return "".join(char if unicodedata.category(char)[0] != "C" else _escaped(char) for char in str(text))


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
