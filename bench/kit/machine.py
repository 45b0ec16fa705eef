"""What every benchmark records about the machine it ran on (the scripts import it from bench/)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_info(torch_info: bool = True, faiss_info: bool = False) -> dict:
    """CPU count and model, Python, the load average at the start; torch's and FAISS's versions and threads."""
    info: dict = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
    }
    if torch_info:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    if faiss_info:
        import faiss
        import numpy as np

        info.update(faiss=faiss.__version__, faiss_omp_threads=faiss.omp_get_max_threads(), numpy=np.__version__)
    return info


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), "" where it is not there."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
