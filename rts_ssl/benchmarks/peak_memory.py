"""``python -m rts_ssl.benchmarks.peak_memory <command> [overrides]``: run a command, then
print its peak resident memory as ``peak_rss_mb=<MB>``.

The peak is read from ``/proc/self/status`` (VmHWM), which starts afresh at ``exec``. The
``ru_maxrss`` a parent gets from ``wait4`` does not: it includes the pages of the parent
the child was forked from, so a large benchmark process would inflate every figure.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from rts_ssl.__main__ import main


def peak_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


if __name__ == "__main__":
    main(sys.argv[1:])
    print(f"peak_rss_mb={peak_rss_mb():.1f}")
