"""Treasure: a small grid game, to read.  Serve it with

    dm-env-rpc-fast serve dm_env_rpc_fast.examples.treasure:make_env

An explorer starts in the top-left corner of a `height` x `width` grid and
looks for the treasure, placed by `seed`.  Each step it moves one square
(0 up, 1 right, 2 down, 3 left; moves into a wall do nothing).  Every step
costs 0.01; reaching the treasure pays 1.0 and ends the episode with
discount 0.  After `max_steps` steps the episode is cut off (discount 1).

Observations (nested, so a client sees `board`, `explorer.position` and
`explorer.steps_left` with dm_env_rpc's "." separator):

    board               uint8 (height, width): 0 floor, 1 explorer, 2 treasure
    explorer.position   int32 (2,): row, column
    explorer.steps_left int32 (): steps before the cut-off

Action: `move`, a DiscreteArray with 4 values.

Properties (the server's properties extension):

    max_steps   int32, readable and writable: applies from the next episode
    seed        int64, readable: where the treasure goes
"""
import dm_env
from dm_env import specs
import numpy as np

from dm_env_rpc_fast import server

_MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)], np.int32)


class Treasure(dm_env.Environment):
  """See the module docstring."""

  def __init__(self, height: int = 5, width: int = 5, seed: int = 0, max_steps: int = 50):
    self._height, self._width = int(height), int(width)
    if self._height < 1 or self._width < 1 or self._height * self._width < 2:
      raise ValueError(f"the grid must have room for two squares, not {height}x{width}")
    if int(max_steps) < 1:
      raise ValueError(f"max_steps must be at least 1, not {max_steps}")
    self._seed = int(seed)
    self._max_steps = self._next_max_steps = int(max_steps)
    squares = self._height * self._width
    # Any square but the start (0, 0), chosen by the seed.
    square = 1 + np.random.default_rng(self._seed).integers(squares - 1)
    self._treasure = np.array(divmod(int(square), self._width), np.int32)
    self._position = np.zeros(2, np.int32)
    self._steps = 0
    self._done = True

  def reset(self) -> dm_env.TimeStep:
    self._max_steps = self._next_max_steps
    self._position = np.zeros(2, np.int32)
    self._steps = 0
    self._done = False
    return dm_env.restart(self._observe())

  def step(self, action) -> dm_env.TimeStep:
    if self._done:
      return self.reset()
    move = _MOVES[int(action)]
    limit = np.array([self._height - 1, self._width - 1])
    self._position = np.clip(self._position + move, 0, limit).astype(np.int32)
    self._steps += 1
    if np.array_equal(self._position, self._treasure):
      self._done = True
      return dm_env.termination(0.99, self._observe())
    if self._steps >= self._max_steps:
      self._done = True
      return dm_env.truncation(-0.01, self._observe())
    return dm_env.transition(-0.01, self._observe())

  def _observe(self):
    board = np.zeros((self._height, self._width), np.uint8)
    board[tuple(self._treasure)] = 2
    board[tuple(self._position)] = 1
    return {
        "board": board,
        "explorer": {
            "position": self._position.copy(),
            "steps_left": np.int32(self._max_steps - self._steps),
        },
    }

  def observation_spec(self):
    return {
        "board": specs.BoundedArray((self._height, self._width), np.uint8, 0, 2, name="board"),
        "explorer": {
            "position": specs.BoundedArray(
                (2,), np.int32, 0, [self._height - 1, self._width - 1], name="position"),
            "steps_left": specs.Array((), np.int32, name="steps_left"),
        },
    }

  def action_spec(self):
    return specs.DiscreteArray(4, dtype=np.int32, name="move")

  def dm_env_rpc_properties(self):
    """The properties this environment offers (see `dm_env_rpc_fast.server.Property`)."""
    return {
        "max_steps": server.Property(
            spec=specs.Array((), np.int32),
            read=lambda: np.int32(self._next_max_steps),
            write=self._set_max_steps,
            description="Steps before an episode is cut off; applies from the next episode."),
        "seed": server.Property(
            spec=specs.Array((), np.int64),
            read=lambda: np.int64(self._seed),
            description="Where the treasure goes."),
    }

  def _set_max_steps(self, value):
    value = int(value)
    if value < 1:
      raise ValueError(f"max_steps must be at least 1, not {value}")
    self._next_max_steps = value


def make_env(**settings) -> Treasure:
  """The factory for the server: CreateWorld settings are `Treasure`'s arguments."""
  return Treasure(**settings)
