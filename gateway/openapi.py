"""The OpenAPI 3 document of the REST surface, generated from the same
descriptors and http rules the gateway routes by, and the docs UI."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from starlette.responses import FileResponse, HTMLResponse, JSONResponse

from gateway.rules import Route, routes_of
from meshkit.topology import PUBLIC_METHODS

OPENAPI_VERSION = "3.0.3"
_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
          FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
          FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}},
                            "additionalProperties": True},
    "google.protobuf.StringValue": {"type": "string", "nullable": True},
    "google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "nullable": True},
    "google.protobuf.DoubleValue": {"type": "number", "nullable": True},
    "google.protobuf.FloatValue": {"type": "number", "nullable": True},
}
STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
    },
}


class _Schemas:
    """Collects a component schema for every message reachable from a route."""

    def __init__(self) -> None:
        self.components: dict[str, dict] = {"google.rpc.Status": STATUS_SCHEMA}

    def ref(self, message: Descriptor) -> dict:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder: recursion ends here
            self.components[message.full_name] = self.message(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def message(self, message: Descriptor, skip: frozenset[str] = frozenset()) -> dict:
        properties = {
            field.json_name: self.field(field) for field in message.fields if field.name not in skip
        }
        return {"type": "object", "properties": properties}

    def field(self, field: FieldDescriptor) -> dict:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return {"type": "object", "additionalProperties": self.single(field.message_type.fields_by_name["value"])}
        single = self.single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def single(self, field: FieldDescriptor) -> dict:
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.ref(field.message_type)
        if kind == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_STRING:
            return {"type": "string"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        if kind in _INT32:
            return {"type": "integer", "format": "int32"}
        if kind in _INT64:
            return {"type": "string", "format": "int64"}
        return {"type": "number", "format": "double" if kind == FieldDescriptor.TYPE_DOUBLE else "float"}


def _parameter_name(field_path: str) -> str:
    # {metadata.kb_id} is {kb_id} to OpenAPI clients: the same URL as {kb_id}
    # on a sibling route, and OpenAPI forbids one path under two names.
    return field_path.rsplit(".", 1)[-1]


def _openapi_path(route: Route) -> str:
    path = route.template.template
    for field in route.template.variables:
        # {name=projects/*} becomes a plain {name}.
        start = path.index("{" + field)
        path = path[:start] + "{" + _parameter_name(field) + "}" + path[path.index("}", start) + 1:]
    return path


def _query_parameters(route: Route, schemas: _Schemas) -> list[dict]:
    bound = {v.split(".")[0] for v in route.template.variables} | {route.body}
    parameters = []
    for field in route.method.input_type.fields:
        if field.name in bound or route.body == "*":
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in _WELL_KNOWN:
            continue
        parameters.append({"name": field.json_name, "in": "query", "required": False,
                           "schema": schemas.field(field)})
    return parameters


def _operation(route: Route, schemas: _Schemas) -> dict:
    method = route.method
    operation: dict = {
        "operationId": f"{method.containing_service.name}_{method.name}",
        "tags": [method.containing_service.name],
        "parameters": [
            {"name": _parameter_name(field), "in": "path", "required": True, "schema": {"type": "string"}}
            for field in route.template.variables
        ] + _query_parameters(route, schemas),
        "responses": {
            "default": {
                "description": "An error, as google.rpc.Status.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}},
            }
        },
    }
    if route.grpc_path not in PUBLIC_METHODS:
        operation["security"] = [{"bearerAuth": []}]
    if route.body:
        operation["requestBody"] = {"required": True, "content": _request_content(route, schemas)}
    output = method.output_type
    reply = schemas.field(output.fields_by_name[route.response_body]) if route.response_body else schemas.ref(output)
    if route.server_streaming:
        operation["responses"]["200"] = {
            "description": "A stream of results: newline-delimited JSON, or Server-Sent Events "
                           "when the request accepts text/event-stream.",
            "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "result": reply, "error": {"$ref": "#/components/schemas/google.rpc.Status"}}}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    else:
        operation["responses"]["200"] = {"description": "OK", "content": {"application/json": {"schema": reply}}}
    return operation


def _request_content(route: Route, schemas: _Schemas) -> dict:
    input_type = route.method.input_type
    path_fields = frozenset(v for v in route.template.variables if "." not in v)
    if route.client_streaming:
        meta = next((f for f in input_type.fields if f.type == FieldDescriptor.TYPE_MESSAGE), None)
        form = schemas.message(meta.message_type) if meta else {"type": "object", "properties": {}}
        bound = {v.split(".", 1)[1] for v in route.template.variables if "." in v}
        form["properties"] = {k: v for k, v in form["properties"].items()
                              if not any(f.json_name == k and f.name in bound for f in meta.message_type.fields)}
        form["properties"]["file"] = {"type": "string", "format": "binary"}
        form["required"] = ["file"]
        return {"multipart/form-data": {"schema": form}}
    if route.body == "*":
        return {"application/json": {"schema": schemas.message(input_type, skip=path_fields)}}
    return {"application/json": {"schema": schemas.field(input_type.fields_by_name[route.body])}}


def document(services: list[ServiceDescriptor], title: str = "sagemesh", version: str = "v1") -> dict:
    schemas = _Schemas()
    paths: dict[str, dict] = {}
    for service in services:
        for route in routes_of(service, backend=""):
            operations = paths.setdefault(_openapi_path(route), {})
            operation = _operation(route, schemas)
            if route.http_method.lower() in operations:  # an additional binding on the same path
                operation["operationId"] += f"_{len(operations)}"
            operations[route.http_method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version,
                 "description": "The REST surface of sagemesh, generated from its Protobuf contracts."},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


_DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>sagemesh API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


def docs_pages(services: list[ServiceDescriptor]) -> dict:
    spec = document(services)
    assets = Path(swagger_ui_bundle.swagger_ui_path)

    async def openapi_json(request):
        return JSONResponse(spec)

    async def docs(request):
        return HTMLResponse(_DOCS_HTML)

    def asset(name: str, media_type: str):
        async def serve(request):
            return FileResponse(assets / name, media_type=media_type)

        return serve

    return {
        "/openapi.json": openapi_json,
        "/docs": docs,
        "/docs/swagger-ui.css": asset("swagger-ui.css", "text/css"),
        "/docs/swagger-ui-bundle.js": asset("swagger-ui-bundle.js", "application/javascript"),
    }
