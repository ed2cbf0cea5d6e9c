"""What every ``make bench`` table says about where it ran: the machine line and the load beside it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    """1/5/15-minute load averages: the machine may be shared, and timings only mean something beside them."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    """``CPU, cores, torch (threads), device, python, load average`` in one line."""
    import torch

    dev = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
    return (f"{cpu_name()}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{dev}, python {platform.python_version()}, load average (1/5/15 min) {load()}")


def write_section(doc: str | Path, begin: str, end: str, lines: list[str]) -> None:
    """Replace the part of ``doc`` between the ``begin`` / ``end`` marker lines with ``lines`` (appended, markers
    included, when the doc has none), so one bench rewrites its own rows and leaves the rest of the doc alone."""
    from common import io

    doc = Path(doc)
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    io.write_text(doc, text)
