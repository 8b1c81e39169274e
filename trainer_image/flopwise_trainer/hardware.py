"""Peak FLOP/s for MFU: the spec's figure, else the contract's GPU table by device name, else (CPU) measured.

A CPU has no datasheet figure we can trust across machines, so on CPU the peak is a short measured fp32
matmul rate with the same thread count the run uses: MFU there means "fraction of what this CPU's best
matmul achieves", an upper-bound-free but honest yardstick.
"""

from __future__ import annotations

import re
import time

import torch

from flopwise.contract import GPU_PEAK_FLOPS

# (pattern on torch.cuda.get_device_name, contract key); first match wins, so specific names go first.
_GPU_NAMES: list[tuple[str, str]] = [
    (r"H200", "H200"),
    (r"H100.*PCIe", "H100-PCIe"),
    (r"H100", "H100-SXM"),
    (r"A100.*80", "A100-80GB"),
    (r"A100", "A100-40GB"),
    (r"L40S", "L40S"),
    (r"\bL4\b", "L4"),
    (r"A10G", "A10G"),
    (r"B200", "B200"),
]


def gpu_table_key(device_name: str) -> str | None:
    for pattern, key in _GPU_NAMES:
        if re.search(pattern, device_name):
            return key
    return None


def measure_cpu_matmul_flops(seconds: float = 0.3, n: int = 512) -> float:
    """Best fp32 matmul rate over a short loop (``2·n³`` FLOPs per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        dt = time.perf_counter() - t0
        best = max(best, 4 * 2 * n**3 / dt)
    return best


def peak_flops(device: torch.device, spec_peak: float | None) -> tuple[float | None, str]:
    """(peak FLOP/s per device, where the figure came from)."""
    if spec_peak:
        return spec_peak, "spec"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = gpu_table_key(name)
        return (GPU_PEAK_FLOPS[key], f"table:{key}") if key else (None, f"unknown GPU {name}")
    return measure_cpu_matmul_flops(), "measured-cpu-fp32-matmul"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
