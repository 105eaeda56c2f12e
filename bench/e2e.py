"""End-to-end steps/s over loopback gRPC: ours, dm-env-rpc's, and the raw stream.

All clients run in this process, one after another in rotation, against one
server process (bench/loopback_server.py) that answers every step with
pre-serialised bytes.  For each observation size:

  raw          the gRPC stream alone: send fixed request bytes, read the
               response bytes, decode nothing.  The ceiling.
  fast         dm_env_rpc_fast's DmEnvAdaptor.step (observations copied,
               writable: upstream's semantics).
  fast_zc      the same with zero_copy=True (read-only views).
  upstream     dm-env-rpc's DmEnvAdaptor.step, when dm_env_rpc is importable.

Each pass times a block of steps per client; the figure is the median over
passes of the per-step time, and the spread (max/min over passes) is printed so
that noisy cells show.  The first block of every client is a warm-up (it also
faults in the pages the observations will reuse).

    python bench/e2e.py [--passes 7] [--seconds 0.3] [--json FILE]
"""
import argparse
import json
import os
import pathlib
import queue
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loopback_server  # noqa: E402

from dm_env_rpc_fast import codec  # noqa: E402
from dm_env_rpc_fast.v1 import connection as fast_connection  # noqa: E402
from dm_env_rpc_fast.v1 import dm_env_adaptor as fast_adaptor  # noqa: E402
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2  # noqa: E402

try:
  from dm_env_rpc.v1 import connection as up_connection
  from dm_env_rpc.v1 import dm_env_adaptor as up_adaptor
except ImportError:  # dm-env-rpc not installed: measure ours alone
  up_connection = up_adaptor = None

# (label, dtype, shape)
CASES = (
    ("1 KB float32 (256,)", "float32", (256,)),
    ("float32 (84,84,3)", "float32", (84, 84, 3)),
    ("float32 (256,256,3)", "float32", (256, 256, 3)),
    ("float64 (1000,1000)", "float64", (1000, 1000)),
)

_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

# glibc returns big blocks to the kernel (mmap/munmap, heap trimming), so every
# step's response buffers land on fresh pages, and a fresh page fault runs at
# ~1 GB/s on these VMs: the transport, not the clients, would set the pace,
# and how fast depends on the VM's mood.  Keeping freed memory in the process
# removes that for every client alike (the raw ceiling included).
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}


def prime_allocator():
  """Applies _MALLOC_ENV's settings to this (already running) process, if glibc."""
  import ctypes
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  m_trim_threshold, m_mmap_threshold = -1, -3
  return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))


def start_server(prime=True):
  """Starts the loopback server in a child process; returns (process, address)."""
  tmp = tempfile.mkdtemp(prefix="dm_env_rpc_fast_e2e_")
  port_file = os.path.join(tmp, "port")
  env = dict(os.environ)
  if prime:
    env.update(_MALLOC_ENV)
  # The server imports the same dm_env_rpc_fast as this process (installed or not).
  package_parent = str(pathlib.Path(codec.__file__).resolve().parent.parent.parent)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
  proc = subprocess.Popen([sys.executable, str(HERE / "loopback_server.py"), "--port-file", port_file], env=env)
  deadline = time.monotonic() + 30
  while not os.path.exists(port_file):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise RuntimeError("loopback server did not start")
    time.sleep(0.02)
  with open(port_file) as f:
    return proc, f"127.0.0.1:{int(f.read())}"


def _settings(dtype, shape):
  return {"dtype": dtype, "shape": np.asarray(shape, np.int32)}


class RawClient:
  """The ceiling: the same stream, the same bytes, nothing decoded."""

  def __init__(self, address, dtype, shape):
    self._channel = grpc.secure_channel(address, grpc.local_channel_credentials(), options=_OPTIONS)
    self._requests = queue.Queue()
    call = self._channel.stream_stream(loopback_server.PROCESS_METHOD, None, None)
    self._stream = call(iter(self._requests.get, None))
    create = dm_env_rpc_pb2.EnvironmentRequest()
    create.create_world.settings["dtype"].strings.array.append(dtype)
    create.create_world.settings["shape"].int32s.array.extend(shape)
    create.create_world.settings["shape"].shape.append(len(shape))
    name = self._call(create).create_world.world_name
    join = dm_env_rpc_pb2.EnvironmentRequest()
    join.join_world.world_name = name
    self._call(join)
    self._step_bytes = codec.encode_step_request({loopback_server.ACT_UID: np.int32(0)}, [loopback_server.OBS_UID])
    self.nbytes = len(self.step_raw())

  def _call(self, request):
    self._requests.put(request.SerializeToString())
    response = dm_env_rpc_pb2.EnvironmentResponse.FromString(next(self._stream))
    if response.HasField("error"):
      raise RuntimeError(response.error.message)
    return response

  def step_raw(self):
    self._requests.put(self._step_bytes)
    return next(self._stream)

  def step(self):
    self.step_raw()

  def check(self, expected):
    _, obs = codec.decode_step_response(self.step_raw())
    np.testing.assert_array_equal(obs[loopback_server.OBS_UID], expected)

  def close(self):
    self._requests.put(None)
    self._channel.close()


class AdaptorClient:
  """A DmEnvAdaptor (ours or upstream's) stepping with a constant action."""

  def __init__(self, connection_module, adaptor_module, address, dtype, shape, **adaptor_kwargs):
    self._connection = connection_module.create_secure_channel_and_connect(address)
    self._env, _ = adaptor_module.create_and_join_world(
        self._connection, _settings(dtype, shape), {}, **adaptor_kwargs)
    self._action = {"act": np.int32(0)}
    self._env.reset()

  def step(self):
    self._env.step(self._action)

  def check(self, expected):
    np.testing.assert_array_equal(self._env.step(self._action).observation["obs"], expected)

  def close(self):
    self._env.close()
    self._connection.close()


def make_clients(address, dtype, shape):
  clients = {
      "raw": RawClient(address, dtype, shape),
      "fast": AdaptorClient(fast_connection, fast_adaptor, address, dtype, shape),
      "fast_zc": AdaptorClient(fast_connection, fast_adaptor, address, dtype, shape, zero_copy=True),
  }
  if up_adaptor is not None:
    clients["upstream"] = AdaptorClient(up_connection, up_adaptor, address, dtype, shape)
  return clients


def time_block(step, count):
  start = time.perf_counter()
  for _ in range(count):
    step()
  return (time.perf_counter() - start) / count


def measure_case(address, dtype, shape, passes, seconds):
  """Returns {client: {"median_s", "spread", "steps_per_s"}} and the wire size."""
  clients = make_clients(address, dtype, shape)
  try:
    expected = loopback_server.observation(dtype, shape)
    counts = {}
    for name, client in clients.items():
      client.check(expected)  # correctness on every cell
      per_step = time_block(client.step, 3)  # warm-up and calibration
      counts[name] = max(3, int(seconds / per_step))
    times = {name: [] for name in clients}
    for p in range(passes):
      order = list(clients)
      order = order[p % len(order):] + order[:p % len(order)]  # rotate who goes first
      for name in order:
        times[name].append(time_block(clients[name].step, counts[name]))
    result = {}
    for name, samples in times.items():
      median = statistics.median(samples)
      result[name] = {"median_s": median, "spread": max(samples) / min(samples),
                      "steps_per_s": 1.0 / median, "samples_s": samples}
    return result, clients["raw"].nbytes
  finally:
    for client in clients.values():
      client.close()


def run(passes=7, seconds=0.3, cases=CASES, out=sys.stdout, prime=True):
  if prime:
    prime_allocator()
  proc, address = start_server(prime)
  results = []
  try:
    for label, dtype, shape in cases:
      cells, nbytes = measure_case(address, dtype, shape, passes, seconds)
      results.append({"case": label, "dtype": dtype, "shape": list(shape),
                      "response_bytes": nbytes, "clients": cells})
      print_case(results[-1], out)
  finally:
    proc.kill()
    proc.wait()
  return results


def print_case(row, out):
  cells = row["clients"]
  raw = cells["raw"]["steps_per_s"]
  parts = [f"{row['case']:<22} {row['response_bytes']:>10,d} B"]
  for name in ("raw", "fast", "fast_zc", "upstream"):
    if name in cells:
      c = cells[name]
      flag = "~" if c["spread"] > 1.3 else " "
      parts.append(f"{name} {c['steps_per_s']:8.0f}/s{flag}({100 * c['steps_per_s'] / raw:3.0f}%)")
  if "upstream" in cells:
    parts.append(f"fast/upstream {cells['fast']['steps_per_s'] / cells['upstream']['steps_per_s']:.1f}x"
                 f" zc/upstream {cells['fast_zc']['steps_per_s'] / cells['upstream']['steps_per_s']:.1f}x")
  print("  ".join(parts), file=out, flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description="end-to-end steps/s over loopback gRPC")
  parser.add_argument("--passes", type=int, default=7)
  parser.add_argument("--seconds", type=float, default=0.3, help="per block of steps")
  parser.add_argument("--json")
  parser.add_argument("--no-prime-allocator", action="store_true",
                      help="leave glibc's mmap/trim thresholds alone (fresh page faults every step)")
  args = parser.parse_args(argv)
  print(f"backend {codec.BACKEND}; upstream {'present' if up_adaptor else 'absent'}; "
        f"'~' marks passes that disagree by over 30%; (%) is of the raw stream; "
        f"allocator {'left alone' if args.no_prime_allocator else 'primed'}")
  results = run(args.passes, args.seconds, prime=not args.no_prime_allocator)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
