"""The mesh's shared runtime: every service and the gateway import it.

settings     environment-driven configuration (one prefix: SAGEMESH_)
topology     the services, their gRPC names and default ports, the RPCs needing no token
errors       domain errors, free of gRPC; mapped to status codes at the edge
server       grpc.aio server bootstrap: health, reflection, graceful shutdown
health       health status that follows a service's dependencies, and its version
channel_policy  how a client talks to the services: keepalive, retry policy, default
             deadlines (the services' channels and the client SDK's)
channels     the services' channels to each other: that policy, and the request's context
interceptors server-side request context, logging, errors and authentication
auth         access-token verification and the caller's identity
db           SQLAlchemy engines and Alembic migrations
logs         JSON logs carrying the request id
"""
