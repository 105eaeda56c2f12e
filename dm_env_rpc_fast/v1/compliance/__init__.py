"""Compliance test mixins: test cases a server author runs against a server.

Subclass one, provide the abstract properties (a joined `connection`, world
names, settings, ...), and run it with any unittest-compatible runner:

    class MyServerStepTest(compliance.Step):

      @property
      def connection(self):
        return self._connection

      @property
      def specs(self):
        return self._specs

      def setUp(self):
        super().setUp()
        ...  # connect, create and join a world

Each mixin is an `absltest.TestCase` with `abc.ABCMeta` as its metaclass, as in
dm-env-rpc, so unittest, absltest and pytest all run the subclasses.
"""
from dm_env_rpc_fast.v1.compliance import create_destroy_world
from dm_env_rpc_fast.v1.compliance import join_leave_world
from dm_env_rpc_fast.v1.compliance import reset
from dm_env_rpc_fast.v1.compliance import reset_world
from dm_env_rpc_fast.v1.compliance import step

CreateDestroyWorld = create_destroy_world.CreateDestroyWorld
JoinLeaveWorld = join_leave_world.JoinLeaveWorld
Reset = reset.Reset
ResetWorld = reset_world.ResetWorld
Step = step.Step

__all__ = ["CreateDestroyWorld", "JoinLeaveWorld", "Reset", "ResetWorld", "Step"]
