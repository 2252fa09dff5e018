"""Where a measurement came from: stored beside every recorded number (GPU, driver, versions,
commit, date), so the book can say what it is showing."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _git_commit() -> str | None:
    # The GPU machine gets a copy of the working tree without .git: the caller passes the commit.
    if os.environ.get("FLASHEDU_COMMIT"):
        return os.environ["FLASHEDU_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _nvidia_smi(query: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def collect() -> dict:
    """A dict describing this machine and software, JSON-ready."""
    from flashedu import __version__, runtime

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "flashedu": __version__,
        "commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": runtime._triton_version(),
        "runtime": runtime.current().mode,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"sm_{props.major}{props.minor}",
                    sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
        smi = _nvidia_smi("driver_version,clocks.max.sm,clocks.max.mem")
        if smi:
            driver, sm_clock, mem_clock = (s.strip() for s in smi.split(","))
            info.update(driver=driver, max_sm_clock_mhz=sm_clock, max_mem_clock_mhz=mem_clock)
    else:
        info.update(gpu=None, cpu=platform.processor() or platform.machine())
    return info


def label(info: dict) -> str:
    """One line for a figure caption."""
    where = info.get("gpu") or f"CPU ({info.get('cpu')})"
    parts = [where, f"driver {info['driver']}" if info.get("driver") else None,
             f"torch {info['torch']}", f"triton {info['triton']}", info["date"][:10]]
    return ", ".join(p for p in parts if p)
