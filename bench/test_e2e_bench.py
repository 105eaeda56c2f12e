"""End to end over loopback gRPC: the harness's clients, one step per benchmark round.

The same servers, clients and checks as `dm-env-rpc-fast bench`'s end-to-end
section (`dm_env_rpc_fast.benchmark.e2e`): our server (`dm-env-rpc-fast serve`)
and the pre-serialised one run in child processes for the whole module, and
each benchmark times `step()` of one client:

  ceiling    raw stream -> pre-serialised server (the gRPC limit for the bytes)
  raw_ours   raw stream -> our server
  raw_copy   the same plus one copy of each response (the bound for `fast`)
  fast       dm_env_rpc_fast's DmEnvAdaptor -> our server
  fast_zc    the same with zero_copy=True
  upstream   dm-env-rpc's DmEnvAdaptor -> our server (fails when dm-env-rpc is
             missing: `pip install ".[test]"` installs it)

Ids read `e2e-<dtype>-<shape>-<client>`; a group holds one observation's clients.
pytest-benchmark runs them one after another rather than interleaved, so the
harness's paired figures are the steadier ones on a noisy machine.
"""

import pytest

from bench_cases import checked, record
from dm_env_rpc_fast.benchmark import e2e
from dm_env_rpc_fast.benchmark import impls
from dm_env_rpc_fast.benchmark import timing

OBSERVATIONS = (("float32", (256,)), ("float32", (84, 84, 3)), ("float32", (256, 256, 3)),
                ("float64", (1000, 1000)))


@pytest.fixture(scope="module")
def servers():
  timing.prime_allocator()
  ours, raw = e2e.start_servers(prime=True)
  yield ours, raw
  ours.stop()
  raw.stop()


@pytest.fixture(scope="module")
def client_sets(servers):
  """One ClientSet per observation, opened on first use, closed with the module."""
  opened = {}

  def get(dtype, shape):
    if (dtype, shape) not in opened:
      opened[(dtype, shape)] = e2e.ClientSet(dtype, shape, *servers)
    return opened[(dtype, shape)]

  yield get
  for clients in opened.values():
    clients.close()


def _label(shape):
  return "x".join(str(d) for d in shape)


@pytest.mark.parametrize("dtype, shape, client", [
    pytest.param(dtype, shape, client, id=f"e2e-{dtype}-{_label(shape)}-{client}")
    for dtype, shape in OBSERVATIONS for client in e2e.CLIENTS])
def test_e2e(benchmark, client_sets, dtype, shape, client):
  clients = client_sets(dtype, shape)
  member = clients.members[client]
  if isinstance(member, impls.Unavailable):
    pytest.fail(f"{client}: {member.status} ({member.reason})", pytrace=False)
  record(benchmark, group=f"e2e-{dtype}-{_label(shape)}", op="e2e", dtype=dtype,
         shape=list(shape), client=client, response_bytes=clients.response_bytes)
  member.call.check(benchmark(member.call.fn))
  checked(benchmark)
