"""Hardware detection returns plain dicts, and the backend choice follows the hardware."""

from __future__ import annotations

import pytest

from runner.lm import hardware
from runner.lm.build import choose_backend


def test_detect_reports_this_machine():
    hw = hardware.detect()
    assert hw["cpu"]["logical_cores"] >= hw["cpu"]["physical_cores"] >= 1
    assert hw["ram_gb"] and hw["ram_gb"] > 0.5
    assert set(hw["backends"]) == {"llamacpp", "mlx", "torch"}
    assert isinstance(hw["cuda"]["available"], bool)
    if not hardware.is_apple_silicon():
        assert hw["apple_silicon"] == {}


def test_cpu_flags_parsed_from_cpuinfo(monkeypatch):
    fake = ("processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t: 0\nflags\t\t: sse avx2 fma f16c\n\n"
            "processor\t: 1\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t: 0\nflags\t\t: sse avx2 fma f16c\n")
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: fake)
    cpu = hardware.cpu()
    assert cpu["model"] == "Test CPU" and cpu["physical_cores"] == 1
    assert cpu["avx2"] and cpu["fma"] and cpu["f16c"] and not cpu["avx512"]


def test_apple_silicon_probe_parses_sysctl_and_system_profiler(monkeypatch):
    answers = {"sysctl machdep.cpu.brand_string": "Apple M3 Pro\n", "sysctl hw.memsize": "38654705664\n",
               "system_profiler": "Chipset Model: Apple M3 Pro\n      Total Number of Cores: 18\n"}
    monkeypatch.setattr(hardware, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(hardware, "_run", lambda cmd, timeout=5.0: answers.get(
        cmd[0] if cmd[0] == "system_profiler" else f"{cmd[0]} {cmd[-1]}", ""))
    info = hardware.apple_silicon()
    assert info == {"chip": "Apple M3 Pro", "gpu_cores": 18, "unified_memory_gb": 36.0, "metal": True}


@pytest.mark.parametrize("hw, installed, expected", [
    ({"apple_silicon": {"chip": "Apple M2", "gpu_cores": 10}}, {"mlx", "llamacpp"}, "mlx"),
    ({"cuda": {"available": True, "devices": [{"name": "H100"}]}}, {"torch", "llamacpp", "mlx"}, "torch"),
    ({"cpu": {"avx2": True, "physical_cores": 8}}, {"llamacpp", "mlx", "torch"}, "llamacpp"),
    ({"cpu": {"avx2": True}}, {"mlx"}, "mlx"),
])
def test_choose_backend(monkeypatch, hw, installed, expected):
    import runner.lm.build as models

    monkeypatch.setattr(models, "backend_available", lambda b: b in installed)
    backend, reason = choose_backend(hw)
    assert backend == expected and reason
