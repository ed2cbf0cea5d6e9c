"""Text normalisation shared by every matcher of a benchmark (applied to all methods' inputs alike).

Product codes are written with and without separators ("DSC-W300" on one site, "DSCW300" on the other);
:func:`expand_codes` appends the separator-free form of every code-like token (letters and digits joined
by ``-``, ``/`` or ``.``), so char n-grams and WordPiece both see the shared form while the original text
stays intact.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"[A-Za-z0-9]+(?:[-/.][A-Za-z0-9]+)+")


def expand_codes(text: str) -> str:
    extra = []
    for tok in _CODE.findall(text):
        joined = re.sub(r"[-/.]", "", tok)
        if re.search(r"\d", joined) and re.search(r"[A-Za-z]", joined):
            extra.append(joined)
    return f"{text} {' '.join(extra)}" if extra else text
