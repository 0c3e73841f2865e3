"""The SDK's system-metrics sampler, without a server."""
from __future__ import annotations

import sys
import time

from officina.sdk.tracking import SystemSampler, parse_nvidia_smi


def test_nvidia_smi_rows_become_per_gpu_metrics():
    out = parse_nvidia_smi("0, 97, 1200, 81559\n1, [N/A], 40, 0\nnot a row\n")
    assert out == {"system/gpu0_utilization": 97.0, "system/gpu0_memory_used_mb": 1200.0,
                   "system/gpu0_memory_percent": 100.0 * 1200 / 81559, "system/gpu1_memory_used_mb": 40.0}


def test_cpu_and_memory_come_from_proc_without_psutil():
    sampler = SystemSampler()
    sampler.psutil = None
    sampler._nvidia_smi = None
    sampler.sample_cpu()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        pass  # some CPU work between the two readings
    sample = sampler.sample()
    assert 0 <= sample["system/cpu_percent"] <= 100
    assert 0 < sample["system/memory_percent"] < 100 and sample["system/memory_used_mb"] > 0
    if "torch" not in sys.modules:
        assert not any(k.startswith("system/gpu") for k in sample)  # no GPU figures made up
