"""The escape suite's count: attempts tried, blocked, skipped, with the sandbox on and off.

Run ``uv run python benchmarks/escapes.py`` (add ``--write docs/benchmarks.md`` to record
the table in that file's "## Escape suite" section). It runs ``tests/security`` twice:
with the default sandbox, and against a server with ``TASK_FRAMEWORK_SANDBOX=off``, to
show that each case does catch the escape it tries.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_summary, replace_section

ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/security/test_escapes.py"
CONTROLS = {"test_outbound_tasks_keep_the_network"}
"""Cases that check a permission is kept, not an escape blocked."""


def run_suite(mode: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = {**os.environ, "TF_ESCAPE_SUITE_SANDBOX": mode}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                SUITE,
                f"--junitxml={report}",
                "-p",
                "no:cacheprovider",
            ],
            cwd=ROOT,
            env=env,
            check=False,
            capture_output=True,
        )
        cases = ET.parse(report).getroot().iter("testcase")
        counts = {"tried": 0, "blocked": 0, "escaped": 0, "skipped": 0}
        for case in cases:
            if case.get("name") in CONTROLS:
                continue
            counts["tried"] += 1
            if case.find("skipped") is not None:
                counts["skipped"] += 1
            elif case.find("failure") is not None or case.find("error") is not None:
                counts["escaped"] += 1
            else:
                counts["blocked"] += 1
        return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="markdown file whose section to set")
    args = parser.parse_args()
    rows = {"default (`auto`)": run_suite("auto"), "`TASK_FRAMEWORK_SANDBOX=off`": run_suite("off")}
    lines = ["| Sandbox | Attempts | Blocked | Escaped | Skipped |", "|---|---|---|---|---|"]
    for label, c in rows.items():
        lines.append(
            f"| {label} | {c['tried']} | {c['blocked']} | {c['escaped']} | {c['skipped']} |"
        )
    body = (
        f"Measured by `benchmarks/escapes.py` ({SUITE}, run as "
        f"{'root' if os.geteuid() == 0 else 'an unprivileged user'}). {machine_summary()}\n\n"
        + "\n".join(lines)
        + "\n\nEach attempt is a test that fails when the escape succeeds; a skipped one names "
        "the layer the host lacks. With the sandbox off, the attempts still blocked are held "
        "by what does not depend on it: the memory and CPU watch and owner-bound warm "
        "workers. The unprivileged variant (user namespaces) is "
        "`tests/security/test_unprivileged.py`."
    )
    print(body)
    if args.write is not None:
        replace_section(args.write, "Escape suite", body)


if __name__ == "__main__":
    main()
