"""An environment whose observations are as large as you ask: for benchmarks.

`make_env(dtype="float32", shape=(256, 256, 3), num_observations=1,
episode_length=1000)` gives an environment with:

- observations `obs_0` ... `obs_{n-1}`, each an array of `dtype` and `shape`
  holding `pattern(dtype, shape, i)` ((arange + i) % 251 cast to dtype; for
  bool, True where that is odd): the same values on every step, so a
  client can check what it decoded, but encoded afresh by the server on every
  step like any other observation;
- one action, `action`: an int32 scalar in [0, 255] that the environment
  ignores;
- reward 0.0 and discount 1.0 on every step; an episode is `episode_length`
  steps after its first (0 means it never ends).

The arrays are made once per environment: producing observations costs the
environment nothing, so what a benchmark measures is the transport and the
codec on both sides.
"""
from typing import Sequence, Union

import dm_env
from dm_env import specs
import numpy as np


def pattern(dtype, shape: Sequence[int], index: int = 0) -> np.ndarray:
  """The values of observation `obs_{index}`: (arange + index) % 251, cast (bool: odd)."""
  dtype = np.dtype(dtype)
  shape = tuple(int(d) for d in shape)
  count = int(np.prod(shape, dtype=np.int64))
  values = (np.arange(count, dtype=np.int64) + index) % 251
  if dtype == np.bool_:
    return (values % 2 == 1).reshape(shape)
  return values.astype(dtype).reshape(shape)


class LargeObservation(dm_env.Environment):
  """See the module docstring."""

  def __init__(self, dtype="float32", shape: Union[int, Sequence[int]] = (256, 256, 3),
               num_observations: int = 1, episode_length: int = 1000):
    self._dtype = np.dtype(str(dtype))
    if self._dtype.kind not in "biuf":
      raise ValueError(f"dtype must be a numeric or bool dtype, not {self._dtype}")
    shape = np.atleast_1d(np.asarray(shape)) if np.ndim(shape) else (shape,)
    self._shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in self._shape):
      raise ValueError(f"shape must not have negative dimensions: {self._shape}")
    num_observations = int(num_observations)
    if num_observations < 1:
      raise ValueError(f"num_observations must be at least 1, not {num_observations}")
    self._episode_length = int(episode_length)
    if self._episode_length < 0:
      raise ValueError(f"episode_length must be >= 0, not {episode_length}")
    self._observations = {}
    for i in range(num_observations):
      array = pattern(self._dtype, self._shape, i)
      array.flags.writeable = False  # what we hand out, nobody may change
      self._observations[f"obs_{i}"] = array
    self._t = 0

  def reset(self) -> dm_env.TimeStep:
    self._t = 0
    return dm_env.restart(self._observations)

  def step(self, action) -> dm_env.TimeStep:
    self._t += 1
    if self._episode_length and self._t >= self._episode_length:
      return dm_env.termination(0.0, self._observations)
    return dm_env.transition(0.0, self._observations)

  def observation_spec(self):
    return {name: specs.Array(self._shape, self._dtype, name=name)
            for name in self._observations}

  def action_spec(self):
    return specs.BoundedArray((), np.int32, 0, 255, name="action")


def make_env(**settings) -> LargeObservation:
  """The factory `dm-env-rpc-fast serve` uses: CreateWorld settings are its arguments."""
  return LargeObservation(**settings)
