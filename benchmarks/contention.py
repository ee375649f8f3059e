"""The engine's speed alone and with one competing busy process, per CPU thread policy, in ONE run
(each policy in a fresh process, since the OpenMP wait policy is read when torch loads).

    python benchmarks/contention.py [--frames 30] [--size 256] [--policies default,passive-2,1,studio]

Policies: "default" (torch's own: one thread per core, OpenMP threads spin while waiting), "passive-N"
(N threads, OMP_WAIT_POLICY=PASSIVE), "spin-COUNT-N" (N threads, GOMP_SPINCOUNT=COUNT), "N" (N threads,
spinning), "studio" (what app.py and the CLIs set:
v2v_core.threads). The competitor is `python -c "while True: pass"`, one core busy, like a browser
decoding video or a second user's request. Prints frames per second of the embedded model's per-frame
path (StreamDiffusion, strength 0.4, 2 steps) after 4 warm-up frames, and the ratio busy / alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
sys.path.insert(0, {root!r})
policy = {policy!r}
if policy == "studio":
    from v2v_core import threads
    threads.apply()
import numpy as np, torch
if policy not in ("default", "studio"):
    torch.set_num_threads(int(policy.split("-")[-1]))
from v2v_core.backbones import load_backbone
from v2v_core.engine import Stream, StreamSettings
from v2v_core.synthetic import make_clip
frames = [np.ascontiguousarray(f) for f in make_clip("pan", {n} + 4, {size}).frames]
s = Stream(load_backbone("toy", device="cpu"), "a pencil sketch", StreamSettings())
for f in frames[:4]:
    s.push(f)
print("READY", flush=True)
sys.stdin.readline()                      # the parent starts (or not) the competitor, then says go
t0 = time.perf_counter()
for f in frames[4:]:
    s.push(f)
print(json.dumps({{"fps": {n} / (time.perf_counter() - t0), "threads": torch.get_num_threads()}}), flush=True)
"""


def policy_env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "V2V_THREADS")}
    if policy.startswith("passive"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if policy.startswith("spin"):                     # spin-COUNT-N: GNU OpenMP spins COUNT times, then sleeps
        env["GOMP_SPINCOUNT"] = policy.split("-")[1]
    return env


def measure(policy: str, frames: int, size: int, busy: bool) -> dict:
    code = WORKER.format(root=str(ROOT), policy=policy, n=frames, size=size)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=policy_env(policy))
    assert p.stdout.readline().strip() == "READY"
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        p.stdin.write("go\n")
        p.stdin.flush()
        out = json.loads(p.stdout.readline())
    finally:
        if hog is not None:
            hog.kill()
        p.wait()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=30, help="timed frames per measurement (default: 30)")
    ap.add_argument("--size", type=int, default=256, help="frame size in px (default: 256)")
    ap.add_argument("--policies", default="default,passive-2,1,passive-1,studio",
                    help="comma-separated policies (default: default,passive-2,1,passive-1,studio)")
    args = ap.parse_args(argv)
    print(f"# {os.cpu_count()} cores; toy per-frame path, {args.size} px, {args.frames} frames after 4 warm-up")
    print("| policy | threads | fps alone | fps with 1 busy process | busy / alone |")
    print("|---|---|---|---|---|")
    rows = {}
    for policy in args.policies.split(","):
        alone = measure(policy, args.frames, args.size, busy=False)
        busy = measure(policy, args.frames, args.size, busy=True)
        rows[policy] = (alone["fps"], busy["fps"])
        print(f"| {policy} | {alone['threads']} | {alone['fps']:.2f} | {busy['fps']:.2f} | "
              f"{busy['fps'] / alone['fps']:.2f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
