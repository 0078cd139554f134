"""The GPU benchmark's batch search and peak table (benchmarks/gpu_check.py), with a stand-in trial."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_check  # noqa: E402


def _trials(fits_up_to: int, mem_per_image: float = 1.0):
    tried = []

    def trial(batch):
        tried.append(batch)
        if batch > fits_up_to:
            return None  # RESOURCE_EXHAUSTED
        return {"batch": batch, "exec_mem_gb": mem_per_image * batch / 1e9}

    return trial, tried


@pytest.mark.parametrize("fits, cap, limit, want_tried", [
    (10_000, 1024, None, [64, 1024]),  # memory unknown: straight to the cap
    (700, 1024, None, [64, 1024, 512]),  # the cap does not fit: halve once
    (10_000, 4096, 700.0, [64, 512, 1024, 2048, 4096]),  # predicted 512 (85 % of 700 B at 1 B/image): grow
    (800, 4096, 700.0, [64, 512, 1024]),  # growth stops at the first RESOURCE_EXHAUSTED
    (10, 1024, None, [64]),  # not even the first batch fits
])
def test_largest_batch(fits, cap, limit, want_tried):
    trial, tried = _trials(fits)
    done = gpu_check.largest_batch(trial, 64, cap, gpu_check.predictor(limit, cap), lambda: 1.0)
    assert tried == want_tried
    ran = [b for b in want_tried if b <= fits]
    assert [r["batch"] for r in done] == ran and (not done or done[-1]["batch"] == max(ran))


def test_time_budget_stops_growth():
    trial, tried = _trials(10_000)
    done = gpu_check.largest_batch(trial, 64, 4096, lambda r: 128, lambda: 0.0)
    assert tried == [64] and len(done) == 1


def test_peaks_and_oom_detection():
    assert gpu_check.peak_tflops("NVIDIA H200", "bfloat16") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe", "float32") == 378.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB", "float32") == 156.0
    assert gpu_check.peak_tflops("cpu", "float32") is None
    assert gpu_check.peak_tflops("cpu", "float32", override=10.0) == 10.0
    assert gpu_check.is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))
    assert not gpu_check.is_oom(ValueError("shape mismatch"))
    assert gpu_check.next_power_of_two_below(600) == 512 and gpu_check.next_power_of_two_below(0.5) == 0
