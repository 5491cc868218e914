"""What every benchmark writes next to its figures: the machine, and its docs section."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path


def machine_summary() -> str:
    """One line: CPU count and model, memory, Python version, date."""
    model = "unknown CPU"
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    return (
        f"Machine: {os.cpu_count()} CPUs ({model}){memory}, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}."
    )


def replace_section(path: Path, title: str, body: str) -> None:
    """Replace the ``## <title>`` section of ``path``, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
