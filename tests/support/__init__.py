"""What the tests share: oracles, helper servers and clients, environments, workloads.

Test modules and conftest.py files import from here (`from support import
codec_reference`); nothing imports a test module or a conftest.py.  The package
is importable as `support` because its parent, tests/, is on the path: pytest
puts it there (`pythonpath` in pyproject.toml), and the runnable modules run
from tests/ as `python -m support.<module>`.  The repository root is never put
on the path for them, so the dm_env_rpc_fast they import is the installed one
(or PYTHONPATH's), as the tests' is.
"""
