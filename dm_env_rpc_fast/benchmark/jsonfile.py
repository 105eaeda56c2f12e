"""`--json`: the file a run writes: its settings, the machine, every cell, the failures."""

import json
from typing import Any, Dict, List, Optional, Sequence

SCHEMA = "dm-env-rpc-fast-bench/1"


def write(path: str, *, env: Dict[str, Any], settings: Dict[str, Any], codec_rows: Sequence[Any],
          cases: Sequence[Any], vector_cases: Optional[Sequence[Any]], failures: List[str],
          elapsed_s: float) -> None:
  """Writes the run to `path`; `vector_cases` is None when --vector was not asked for.

  Every cell carries its samples, median and spread (`to_json` of the rows and
  cases), so a reader can recompute any figure the tables show.
  """
  data = {
      "schema": SCHEMA,
      "created": settings["started"],
      "settings": settings,
      "environment": env,
      "codec": [row.to_json() for row in codec_rows],
      "e2e": [case.to_json() for case in cases],
      "failures": failures,
      "ok": not failures,
      "elapsed_s": round(elapsed_s, 2),
  }
  if vector_cases is not None:
    data["vector"] = [case.to_json() for case in vector_cases]
  with open(path, "w") as f:
    json.dump(data, f, indent=1)
