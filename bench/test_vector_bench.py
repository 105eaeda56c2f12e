"""Many environments from one agent: the batched client against one DmEnvAdaptor loop.

The same servers, clients and checks as `dm-env-rpc-fast bench --vector`
(`dm_env_rpc_fast.benchmark.vector_bench`): `vector_bench.COUNTS`' largest
needed number of `dm-env-rpc-fast serve` processes run for the whole module
with the large-observation environment at float32 (84,84,3).  Each benchmark
round is one call: `VectorEnv.step` over N servers (N environment steps) or
one `DmEnvAdaptor.step` (one step); `extra_info["env_steps"]` says which, so
aggregate steps/s = env_steps / time per round.  The N-threads baseline is a
duration, not a call, and is measured only by the harness.

Ids read `vector-<client>-N<n>`.
"""

import pytest

from bench_cases import checked, record
from dm_env_rpc_fast.benchmark import e2e
from dm_env_rpc_fast.benchmark import timing
from dm_env_rpc_fast.benchmark import vector_bench
from dm_env_rpc_fast.examples import large_observation

COUNTS = (1, 4)
DTYPE, SHAPE = e2e.parse_observation(vector_bench.OBSERVATION)


@pytest.fixture(scope="module")
def addresses():
  timing.prime_allocator()
  servers = vector_bench.start_servers(max(COUNTS), prime=True)
  yield [s.address for s in servers]
  for s in servers:
    s.stop()


@pytest.mark.parametrize("client, n", [
    pytest.param("batched", n, id=f"vector-batched-N{n}") for n in COUNTS] + [
    pytest.param("one_loop", 1, id="vector-one_loop-N1")])
def test_vector(benchmark, addresses, client, n):
  settings = vector_bench.settings_for(DTYPE, SHAPE)
  expected = large_observation.pattern(DTYPE, SHAPE, 0)
  if client == "batched":
    runner, transport = vector_bench.batched(addresses[:n], settings, None, expected)
  else:
    runner, transport = vector_bench.one_loop(addresses[0], settings, None, expected), None
  try:
    record(benchmark, group="vector", op="vector", dtype=DTYPE, shape=list(SHAPE), client=client,
           n=n, env_steps=n, transport=transport)
    runner.check(benchmark(runner.step))
    checked(benchmark)
  finally:
    runner.close()
