"""The CPU thread policy of a studio process, applied where the process starts (app.py and the CLIs'
`__main__` blocks), never when the library is imported.

PyTorch's default on a CPU is one intra-op thread per core, with OpenMP threads spinning while they wait:
fastest on an idle machine, but when anything else wants a core (the browser of a Live session, the
server's own image encoding, a second user, another program) the spinning threads fight it and the
engine collapses. Measured with benchmarks/contention.py on 2 cores (README, "Speed under load"): torch's
default 5.9-6.7 fps alone and 1.8 fps with one busy process (0.27-0.30x); one thread with a passive wait
4.2 fps alone and 4.0 with the busy process (0.95-0.98x). So, V2V_THREADS:
- "auto" (the default): intra-op threads = cores - 1 (at least 1), OMP_WAIT_POLICY=PASSIVE: one core stays
  free for the server, the browser and the video encoder, and waiting threads sleep;
- "torch": torch's own default (fastest on an otherwise idle machine: training, batch runs);
- N: N threads, passive wait.
A user's own OMP_WAIT_POLICY / OMP_NUM_THREADS are kept.
"""
from __future__ import annotations

import os
import sys


def default_threads() -> int:
    return max(1, (os.cpu_count() or 1) - 1)


def apply() -> int | None:
    """Set the policy for this process; returns the intra-op thread count (None: torch's default). Call it
    before torch is imported: the wait policy is read when OpenMP starts."""
    choice = os.environ.get("V2V_THREADS", "auto").strip().lower()
    if choice == "torch":
        return None
    n = default_threads() if choice in ("", "auto") else max(1, int(choice))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n
