"""A short codec workload for the leak check in tools/sanitizer_tests.sh.

Encodes and decodes every dtype, strings, protos and step messages, both
zero_copy settings, and malformed input (error paths), on the native backend.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))

import numpy as np  # noqa: E402

from dm_env_rpc_fast.codec import _native_backend as codec  # noqa: E402
from test_memory import MALFORMED, VALUES  # noqa: E402

big = np.arange(100_000, dtype=np.int64)  # above the GIL-release threshold
for i in range(300):
  for value in list(VALUES.values()) + [big]:
    buf = codec.encode_tensor(value)
    codec.decode_tensor(buf, zero_copy=i & 1)
    codec.decode_tensor(bytearray(buf), zero_copy=True)
  request = codec.encode_step_request(dict(enumerate(VALUES.values())), [1, 2])
  actions, _ = codec.decode_step_request(request, zero_copy=True)
  codec.decode_step_response(codec.encode_step_response(1, actions))
  for bad in MALFORMED:
    for decode in (codec.decode_tensor, codec.decode_step_request, codec.decode_step_response):
      try:
        decode(bad)
      except ValueError:
        pass
print("leak workload done")
