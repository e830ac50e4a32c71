"""What the benchmark scripts share: a case run in a fresh interpreter, the machine's description, and the process's
resident memory from /proc.

The scripts are run as `PYTHONPATH=$PWD python benchmarks/<script>.py`, so Python puts benchmarks/ on sys.path and
`from _common import ...` finds this file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(script: str, spec: dict, timeout: float | None, env: dict | None = None) -> dict:
    """Run `script --child <spec as JSON>` in a fresh interpreter, so that its peak memory (ru_maxrss, VmHWM) is its
    own, and return the dict it prints on its `RESULT ` line; else {"error": the last line of its stderr}. `env`: more
    environment variables for the child; the project root is put first on its PYTHONPATH."""
    cmd = [sys.executable, os.path.abspath(script), "--child", json.dumps(spec)]
    env = dict(os.environ, **(env or {}), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def add_run_options(ap: argparse.ArgumentParser, timeout: float, json_help: str | None = None) -> None:
    """The options of a script that runs its cases through run_child: --timeout (seconds per case), --json (also
    write the results to this file) and the hidden --child, by which run_child starts one case."""
    ap.add_argument("--timeout", type=float, default=timeout)
    ap.add_argument("--json", help=json_help)
    ap.add_argument("--child", help=argparse.SUPPRESS)


def answer_child(spec_json: str, run_case) -> int:
    """The child's side of run_child: run_case(the spec) and its result printed on the `RESULT ` line; returns 0, the
    child's exit status."""
    print("RESULT " + json.dumps(run_case(json.loads(spec_json))), flush=True)
    return 0


def status_kb(field: str) -> int:
    """One field of /proc/self/status in kB (VmRSS: resident now, VmHWM: the high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> None:
    """Reset this process's VmHWM to its current resident size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cpu_summary() -> str:
    """CPU model, core count and the vector flags that decide the screen (lscpu), torch's CPU capability."""
    import torch

    model, flags = platform.processor() or platform.machine(), []
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                model = val.strip()
            if key.strip() == "Flags":
                flags = [f for f in val.split() if f.startswith(("avx", "amx", "fma"))]
    except (OSError, subprocess.SubprocessError):
        pass
    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return (f"cpu: {model}; {os.cpu_count()} CPUs; lscpu flags: {' '.join(flags) or '?'}; torch {torch.__version__} "
            f"capability {cap}, {torch.get_num_threads()} threads")


def header() -> str:
    """The first two lines of a report: the date and the load average at the start, then cpu_summary()."""
    return (f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average {os.getloadavg()[0]:.2f} at the start\n"
            f"{cpu_summary()}")
