#!/usr/bin/env python3
"""Connect, step, close, many times over the shared-memory channel: does anything pile up?

    python tools/shm_soak.py [--cycles 10000] [--shape 4096] [--kill-every 0]

Starts `dm-env-rpc-fast serve` in another process, then runs the cycles in
this one: each opens a connection (transport "shm"), creates and joins a
world, resets, steps, and closes.  With --kill-every K, every K-th cycle is a
child process killed with SIGKILL in the middle of stepping instead.  Every
1,000 cycles (and at the end) it prints both processes' RSS, open fds and
memfds, the files in /dev/shm, and the server's channel count, and at the end
exits 1 if any of them grew past a small allowance after the first
thousand cycles (allocators and gRPC settle in that time).
"""
import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

_CHILD = """
import sys
from dm_env_rpc_fast.v1 import connection, dm_env_adaptor
conn = connection.create_secure_channel_and_connect(sys.argv[1], transport="shm")
env, _ = dm_env_adaptor.create_and_join_world(conn, {"shape": [int(sys.argv[2])], "episode_length": 0}, {})
env.reset()
print("stepping", flush=True)
while True:
  env.step({"action": 1})
"""


def usage(pid):
  """(RSS in MiB, open fds, memfds) of a process."""
  with open(f"/proc/{pid}/status") as f:
    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
  fds = os.listdir(f"/proc/{pid}/fd")
  memfds = 0
  for fd in fds:
    try:
      memfds += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:")
    except OSError:
      pass
  return rss, len(fds), memfds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cycles", type=int, default=10000)
  parser.add_argument("--shape", type=int, default=4096, help="float32 elements per observation")
  parser.add_argument("--kill-every", type=int, default=0,
                      help="every K-th cycle is a client process killed mid-stepping (0: none)")
  args = parser.parse_args()

  from dm_env_rpc_fast.v1 import connection, dm_env_adaptor  # pylint: disable=import-outside-toplevel

  tmp = pathlib.Path(tempfile.mkdtemp())
  port_file = tmp / "port"
  server_log = tmp / "server.log"
  status = 0
  # The server's stderr goes to a file, with faulthandler on: a crash leaves a traceback.
  with open(server_log, "wb") as log:
    server = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "dm_env_rpc_fast",
                               "serve", "--port-file", str(port_file)], stderr=log)
  try:
    deadline = time.monotonic() + 60
    while not port_file.exists():
      if time.monotonic() > deadline or server.poll() is not None:
        raise SystemExit("the server did not start")
      time.sleep(0.05)
    address = f"127.0.0.1:{port_file.read_text()}"
    shm_before = sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []
    rows = []
    start = time.monotonic()
    kills = 0
    for cycle in range(1, args.cycles + 1):
      if args.kill_every and cycle % args.kill_every == 0:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, address, str(args.shape)],
                                 stdout=subprocess.PIPE)
        child.stdout.readline()
        time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        kills += 1
      else:
        conn = connection.create_secure_channel_and_connect(address, transport="shm")
        env, _ = dm_env_adaptor.create_and_join_world(
            conn, {"shape": [args.shape], "episode_length": 0}, {})
        env.reset()
        env.step({"action": 1})
        assert conn.transport == "shm"
        conn.close()
      if cycle % 1000 == 0 or cycle == args.cycles:
        time.sleep(0.2)  # let the server finish with the last stream
        row = (cycle, usage(os.getpid()), usage(server.pid))
        rows.append(row)
        (c_rss, c_fds, c_mem), (s_rss, s_fds, s_mem) = row[1], row[2]
        print(f"{cycle:>6} cycles ({time.monotonic() - start:6.1f} s, {kills} killed): "
              f"client RSS {c_rss:6.1f} MiB, {c_fds} fds, {c_mem} memfds | "
              f"server RSS {s_rss:6.1f} MiB, {s_fds} fds, {s_mem} memfds", flush=True)
    shm_after = sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []
    print(f"/dev/shm: {len(shm_before)} entries before, {len(shm_after)} after"
          f"{'' if shm_after == shm_before else ' (CHANGED)'}")
    if server.poll() is not None:
      print("the server died")
      status = 1
    settled, last = rows[0], rows[-1]
    grew = []
    for who, index in (("client", 1), ("server", 2)):
      rss0, fds0, mem0 = settled[index]
      rss1, fds1, mem1 = last[index]
      if rss1 > rss0 + 20:
        grew.append(f"{who} RSS {rss0:.1f} -> {rss1:.1f} MiB")
      if fds1 > fds0 + 2:
        grew.append(f"{who} fds {fds0} -> {fds1}")
      if mem1 > mem0:
        grew.append(f"{who} memfds {mem0} -> {mem1}")
    if shm_after != shm_before:
      grew.append("/dev/shm changed")
    print("grew: " + "; ".join(grew) if grew else "nothing grew")
    if grew:
      status = 1
  finally:
    if server.poll() is None:
      server.send_signal(signal.SIGTERM)
      try:
        server.wait(10)
      except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        print("the server did not stop within 10 s of SIGTERM")
        status = 1
    if server.returncode not in (0, -signal.SIGTERM):
      print(f"the server exited with {server.returncode}; its log ({server_log}) ends:")
      print(server_log.read_text(errors="replace")[-3000:])
      status = 1
  if status == 0:
    shutil.rmtree(tmp, ignore_errors=True)
  else:
    print(f"kept {tmp} (the server's log)")
  return status


if __name__ == "__main__":
  sys.exit(main())
