"""The codec section: encode and decode throughput per dtype, size and implementation."""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from dm_env_rpc_fast.benchmark import cases as cases_lib
from dm_env_rpc_fast.benchmark import impls
from dm_env_rpc_fast.benchmark import timing

OPS = ("encode", "decode")
OP_TITLES = {
    "encode": "encode (numpy value -> Tensor wire bytes)",
    "decode": "decode (Tensor wire bytes -> numpy array, copying: the default)",
}


class CodecRow:
  """One (op, dtype, variant, size): every implementation's cell."""

  def __init__(self, op: str, case: cases_lib.Case):
    self.op = op
    self.dtype, self.variant, self.size = case.dtype, case.variant, case.size
    self.kind = case.kind
    self.shape = case.shape
    self.nbytes = case.nbytes
    self.wire_bytes = len(case.wire)
    self.cells: Dict[str, timing.Cell] = {}

  @property
  def scalar(self) -> bool:
    return self.shape == ()

  def median(self, impl: str) -> Optional[float]:
    cell = self.cells.get(impl)
    return cell.median if cell is not None else None

  def mb_per_s(self, impl: str) -> Optional[float]:
    """MB/s of array data (MB = 1e6 bytes); None for scalars and cells without a time."""
    median = self.median(impl)
    if self.scalar or not median:
      return None
    return self.nbytes / median / 1e6

  def ratio(self, impl: str, base: str) -> Optional[float]:
    """How many times faster `impl` is than `base` (base's time / impl's time)."""
    mine, theirs = self.median(impl), self.median(base)
    return theirs / mine if mine and theirs else None

  def is_view(self, impl: str) -> bool:
    """int8/uint8 decode to views of the wire bytes in our backends: no bytes move."""
    return self.op == "decode" and impl in impls.BACKENDS and self.dtype in ("int8", "uint8") \
        and not self.scalar

  def to_json(self):
    return {
        "op": self.op, "dtype": self.dtype, "variant": self.variant, "kind": self.kind,
        "size": self.size, "shape": list(self.shape), "array_bytes": self.nbytes,
        "wire_bytes": self.wire_bytes,
        "cells": {impl: dict(cell.to_json(), mb_per_s=self.mb_per_s(impl),
                             us_per_call=None if cell.median is None else cell.median * 1e6)
                  for impl, cell in self.cells.items()},
    }


def plan(kinds: Sequence[Tuple[str, str]], sizes: Sequence[str]) -> List[Tuple[str, str, str]]:
  """The (dtype, variant, size) cases of a run, in the order they run."""
  return [(dtype, variant, size) for dtype, variant in kinds for size in sizes]


def run_case(dtype: str, variant: str, size: str, *, passes: int, pass_seconds: float,
             warmup_seconds: float, impl_names: Sequence[str] = impls.IMPLS,
             skip: Optional[Dict[str, str]] = None,
             on_pass: Optional[Callable[[str, int], None]] = None) -> List[CodecRow]:
  """Measures one case's encode and decode, every implementation side by side.

  Args:
    dtype, variant, size: the case (see `cases`).
    passes, pass_seconds, warmup_seconds: see `timing.measure_group`.
    impl_names: the implementations, in table order.
    skip: impl -> reason, for implementations left out on purpose (shown as n/a).
    on_pass: called with (op, pass index) after every pass.

  Returns:
    One row per operation.
  """
  case = cases_lib.get_case(dtype, variant, size)
  rows = []
  for op in OPS:
    row = CodecRow(op, case)
    members = {}
    for impl in impl_names:
      if skip and impl in skip:
        members[impl] = impls.Unavailable("n/a", skip[impl])
        continue
      try:
        members[impl] = impls.make_call(op, impl, case)
      except impls.Unavailable as e:
        members[impl] = e
    row.cells = timing.measure_group(
        members, passes=passes, pass_seconds=pass_seconds, warmup_seconds=warmup_seconds,
        on_pass=None if on_pass is None else (lambda p, op=op: on_pass(op, p)))
    rows.append(row)
  return rows
