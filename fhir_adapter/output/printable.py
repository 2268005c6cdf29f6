"""Text for a terminal or a log: control characters shown as escapes, never sent.

File names, resource ids and server-given text reach the summary and the logs; an ESC or CSI in them
would otherwise drive the operator's terminal (recolour, retitle, rewrite earlier lines).
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, and the C1 controls (0x9b is a one-byte CSI on some terminals).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
