"""Cost of the startup hook (``occon_plugin_autoregister.pth``) on every Python process.

Times ``python -c pass`` with the hook on and off (``OCCON_PLUGIN_AUTOREGISTER=0``), interleaved
in one run so both see the same machine load, and prints the medians, their difference and ratio.
The hook must add < 20 ms. Run it with the interpreter of the environment the plugin is installed in::

    .venv/bin/python bench/startup.py [--runs 40]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HOOK = "occon_plugin_autoregister.pth"
BUDGET_MS = 20.0


def import_cost_ms(env: dict) -> float:
    """What ``python -X importtime`` charges to ``occon_plugin`` at startup (cumulative, ms)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=env, capture_output=True,
                         text=True, check=True).stderr
    rows = [line.split("|") for line in err.splitlines() if line.rstrip().endswith(" occon_plugin")]
    return int(rows[-1][1]) / 1000.0 if rows else 0.0


def one_run(env: dict, code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="runs per setting (interleaved)")
    args = parser.parse_args()

    hook = Path(sysconfig.get_paths()["purelib"]) / HOOK
    if not hook.is_file():
        sys.exit(f"{hook} is not installed: install the plugin into this environment first (./run setup)")
    on = dict(os.environ, OCCON_PLUGIN_AUTOREGISTER="1")
    off = dict(os.environ, OCCON_PLUGIN_AUTOREGISTER="0")
    # the hook really runs (and only arms the post-import hook: no torch, no solo-learn)
    probe = "import sys; print('occon_plugin' in sys.modules, 'torch' in sys.modules, 'solo' in sys.modules)"
    seen_on = subprocess.run([sys.executable, "-c", probe], env=on, capture_output=True, text=True).stdout.split()
    seen_off = subprocess.run([sys.executable, "-c", probe], env=off, capture_output=True, text=True).stdout.split()
    if seen_on != ["True", "False", "False"] or seen_off[0] != "False":
        sys.exit(f"unexpected modules at startup: hook on {seen_on}, off {seen_off}")

    for _ in range(3):  # warm the OS file cache
        one_run(on, "pass"), one_run(off, "pass")
    times_on, times_off = [], []
    for _ in range(args.runs):
        times_on.append(one_run(on, "pass"))
        times_off.append(one_run(off, "pass"))
    med_on, med_off = statistics.median(times_on), statistics.median(times_off)
    import_ms = statistics.median(import_cost_ms(on) for _ in range(10))
    diff = med_on - med_off
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.platform()}")
    print(f"python -c pass, {args.runs} interleaved runs each: median (min)")
    print(f"  hook off (OCCON_PLUGIN_AUTOREGISTER=0): {med_off:7.1f} ms ({min(times_off):.1f})")
    print(f"  hook on  (default)                    : {med_on:7.1f} ms ({min(times_on):.1f})")
    print(f"  min on - min off: {min(times_on) - min(times_off):+.1f} ms")
    print(f"  added by the hook: {diff:+.1f} ms  (ratio on/off {med_on / med_off:.3f}; budget < {BUDGET_MS:.0f} ms: "
          f"{'OK' if diff < BUDGET_MS else 'OVER'})")
    print(f"  python -X importtime charges {import_ms:.2f} ms to `import occon_plugin` at startup (median of 10)")


if __name__ == "__main__":
    main()
