"""Routes read from the google.api.http options of the service descriptors.

Nothing here names an RPC: an annotated RPC in a loaded service is a route,
and an RPC without the option is not exposed.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from gateway.templates import PathTemplate, parse

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Route:
    http_method: str  # upper case: "GET", "POST", ...
    template: PathTemplate
    # "" (no body), "*" (the whole request), or the request field the body fills.
    body: str
    # "" for the whole response, or the response field that is the body.
    response_body: str
    method: MethodDescriptor
    # The mesh service that serves it, e.g. "identity".
    backend: str

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def client_streaming(self) -> bool:
        return self.method.client_streaming


def _bindings(rule: http_pb2.HttpRule):
    yield rule
    for extra in rule.additional_bindings:
        yield extra


def routes_of(service: ServiceDescriptor, backend: str) -> list[Route]:
    routes = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for rule in _bindings(options.Extensions[annotations_pb2.http]):
            kind = rule.WhichOneof("pattern")
            if kind in HTTP_METHODS:
                verb, path = kind.upper(), getattr(rule, kind)
            elif kind == "custom":
                verb, path = rule.custom.kind.upper(), rule.custom.path
            else:
                continue
            routes.append(
                Route(verb, parse(path), rule.body, rule.response_body, method, backend)
            )
    return routes


class Router:
    def __init__(self, routes: list[Route]) -> None:
        # The most specific template wins when two match the same path.
        self.routes = sorted(routes, key=lambda r: -r.template.literal_count)

    def match(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]] | tuple[None, list[str]]:
        """The route and its path variables; or None and the methods the path allows."""
        allowed = []
        for route in self.routes:
            variables = route.template.match(raw_path)
            if variables is None:
                continue
            if route.http_method == http_method:
                return route, variables
            allowed.append(route.http_method)
        return None, sorted(set(allowed))
