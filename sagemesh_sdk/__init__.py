"""sagemesh's client SDK: the services over gRPC, typed by their contracts.

    from sagemesh_sdk import Client
    from sagemesh.conversation.v1 import conversation_pb2 as conversation

    async with Client() as client:
        await client.login("ann@example.com", "correct horse battery")
        created = await client.conversation.CreateConversation(conversation.CreateConversationRequest())

The stubs are grpcio's, generated from proto/ with the messages (gen/python,
`make gen`); their types come from mypy-protobuf. The client adds the mesh's
channel policy (keepalive, retries of UNAVAILABLE, reconnect backoff, message
size limits, a default deadline), the caller's access token, its renewal, and
patience when the mesh says it is busy.

addresses  where each service is (one address, per service, or the environment)
session    the caller's tokens and their renewal
busy       waiting out RESOURCE_EXHAUSTED (429): Retry-After, backoff with jitter, one gate per client
calls      the interceptors: deadline, token, renewal on expiry, waiting when busy
client     Client
"""

from meshkit.channel_policy import ChannelPolicy
from meshkit.health import HealthReport
from sagemesh_sdk.busy import BusyRetry
from sagemesh_sdk.client import Client
from sagemesh_sdk.session import Tokens

__all__ = ["BusyRetry", "ChannelPolicy", "Client", "HealthReport", "Tokens"]
