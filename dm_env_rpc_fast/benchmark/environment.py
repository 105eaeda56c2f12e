"""The machine, the OS, Python and the library versions a run reports (header and JSON)."""

import os
import platform
from typing import Any, Dict, Optional

from dm_env_rpc_fast.benchmark import impls


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def _os_name() -> str:
  try:
    release = platform.freedesktop_os_release()
    distro = release.get("PRETTY_NAME") or release.get("NAME")
  except (OSError, AttributeError):
    distro = None
  kernel = f"{platform.system()} {platform.release()} {platform.machine()}"
  return f"{distro}, {kernel}" if distro else kernel


def _version(distribution: str) -> Optional[str]:
  from importlib import metadata
  try:
    return metadata.version(distribution)
  except metadata.PackageNotFoundError:
    return None


def probe() -> Dict[str, Any]:
  """The machine, OS, Python and library versions, for the header and the JSON."""
  import numpy as np
  import google.protobuf
  from google.protobuf.internal import api_implementation
  import grpc
  import dm_env_rpc_fast
  from dm_env_rpc_fast import codec

  backends = {}
  for name in impls.BACKENDS:
    module, why = impls.backend(name)
    backends[name] = "available" if module is not None else f"unavailable ({why})"
  from dm_env_rpc_fast.shm import _wire as shm_wire
  try:
    polling_us = shm_wire.spin_setting() // 1000
  except ValueError:
    polling_us = None  # a bad value (runs that make connections refuse to start with one)
  try:
    affinity = len(os.sched_getaffinity(0))
  except AttributeError:
    affinity = None
  return {
      "cpu": _cpu_model(),
      "cpu_count": os.cpu_count(),
      "cpus_usable": affinity,
      "os": _os_name(),
      "python": f"{platform.python_implementation()} {platform.python_version()}",
      "numpy": np.__version__,
      "protobuf": f"{google.protobuf.__version__} ({api_implementation.Type()})",
      "grpcio": grpc.__version__,
      "dm_env_rpc_fast": dm_env_rpc_fast.__version__,
      "backend": codec.BACKEND,
      "backends": backends,
      "shm_polling_us": polling_us,
      "dm_env_rpc": impls.upstream_version(),
      "matplotlib": _version("matplotlib"),
  }
