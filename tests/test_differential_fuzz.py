"""The differential fuzzer (support/fuzz_differential.py), a bounded fixed-seed run per backend.

`python -m support.fuzz_differential` runs the same checks for a bounded time instead.
"""

import pytest

from support import fuzz_differential

INPUTS = 10_000


@pytest.mark.parametrize("seed", [1, 2])
def test_decoders_match_protobuf(codec, seed):
  inputs, decodes, findings = fuzz_differential.fuzz([codec], seed=seed, count=INPUTS)
  assert inputs == INPUTS and findings == 0
  assert decodes > INPUTS  # most inputs were compared, not left out


def test_backends_match_each_other_and_protobuf(both_backends):
  inputs, decodes, findings = fuzz_differential.fuzz(list(both_backends), seed=3, count=INPUTS)
  assert findings == 0 and decodes > INPUTS
