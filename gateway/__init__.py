"""The HTTP/JSON gateway: grpc-gateway's behaviour, driven by the contracts.

server.py     wiring: settings, channels, uvicorn
rules.py      google.api.http rules read from the service descriptors -> routes
templates.py  path templates: parse, match, bind variables
transcode.py  HTTP request -> protobuf request; protobuf -> JSON
errors.py     gRPC status -> HTTP status and google.rpc.Status JSON
app.py        the ASGI application: routing, unary, streaming and upload calls
openapi.py    the OpenAPI 3 document of the REST surface
"""
