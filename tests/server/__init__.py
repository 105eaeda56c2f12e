"""Tests of `dm_env_rpc_fast.server` (a package, so that its conftest is `server.conftest`
and does not take the place of tests/conftest.py as the module `conftest`)."""
