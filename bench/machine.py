"""What a benchmark ran on: CPU model, vector extensions, cores, library versions."""

import importlib.metadata
import os
import platform
from pathlib import Path

# The flags that decide which kernels a CPU gets: AVX2 only (e.g. AMD EPYC) vs AVX-512 with
# VNNI/BF16 and AMX (recent Intel Xeon). bf16 is only fast with avx512_bf16 or amx_bf16.
VECTOR_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
LIBRARIES = ("torch", "onnxruntime", "transformers")


def cpuinfo_field(cpuinfo, name):
    """Return the value of the first `name : value` line of /proc/cpuinfo text, or None."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def vector_extensions(cpuinfo):
    """Return the vector extensions among VECTOR_FLAGS that the first CPU lists, in that order."""
    flags = set((cpuinfo_field(cpuinfo, "flags") or "").split())
    return [flag for flag in VECTOR_FLAGS if flag in flags]


def has_fast_bf16(extensions):
    """Return whether bf16 has native instructions here (otherwise it is slower than fp32)."""
    return any(flag in extensions for flag in BF16_FLAGS)


def library_versions():
    """Return the installed version of each library the numbers depend on (None if absent)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info():
    """Return what the numbers were measured on."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return {
        "cpu": cpuinfo_field(cpuinfo, "model name") or platform.processor(),
        "vector_extensions": vector_extensions(cpuinfo),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        **library_versions(),
        "load_avg_at_start": os.getloadavg()[0],
    }
