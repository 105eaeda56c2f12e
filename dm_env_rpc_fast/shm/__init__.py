"""A same-host step channel: step messages through shared memory, not gRPC.

When a dm_env_rpc_fast client and a dm_env_rpc_fast server run on one host,
each step's request and response bytes (exactly the wire format the codec
reads and writes) go through two shared-memory regions, with a Unix socket
to say "your turn"; the gRPC stream stays open for everything else
(CreateWorld, JoinWorld, Reset, properties, ...) and as the connection's life:
when it ends, the channel ends.

How it is agreed, per connection, at its first step:

1. The client sends an `EnvironmentRequest` whose `extension` is an
   `OpenChannelRequest` (package `dm_env_rpc_fast.shm.v1`, `channel.proto`).
   A server that does not know it answers with an error, as dm_env_rpc
   requires for unknown extensions, and the client stays on gRPC.
2. Our server answers with an `OpenChannelResponse`: a Unix socket address in
   Linux's abstract namespace, a single-use token, its host's boot id and its
   user id.  A client on another host or running as another user stays on gRPC.
3. The client connects and presents the token; the server checks the peer's
   user id (SO_PEERCRED) and the token, and the client checks the server's
   user id.  Any failure: the client stays on gRPC.

Then each step is one 16-byte packet each way.  Each side writes only into
the region it created (a sealed memfd, passed over the socket); a region
grows by being replaced, so no message is too large.  The server encodes
observations straight into its region and the client decodes from it.

What users see: `Connection.transport` is "shm" or "grpc";
`DM_ENV_RPC_FAST_TRANSPORT=grpc` or `transport="grpc"` keeps steps on gRPC,
`transport="shm"` insists on the channel.  With `zero_copy=True`, fixed-width
observations are views of the server's region and hold their values only
until the next step on the connection.  A connection must not be used across
`fork()` (nor must a gRPC channel): the child gets `ChannelError`.

Linux only (memfd seals and abstract Unix sockets); elsewhere steps use gRPC.
"""
from dm_env_rpc_fast.shm._wire import SUPPORTED, ChannelError

__all__ = ["SUPPORTED", "ChannelError"]
