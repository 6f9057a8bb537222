"""HTTP -> protobuf request, protobuf -> JSON, per the proto3 JSON mapping.

Fields come from three places, as in grpc-gateway: path variables, the body
(the whole request for body "*", one field for body "<field>"), and query
parameters for every field bound by neither. Query parameter names may use
proto or JSON names and dotted paths; repeated fields take repeated
parameters; a map entry is `field[key]=value`; unknown parameters are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# Loaded for their types: error details in responses are Any-packed.
from google.rpc import error_details_pb2  # noqa: F401

from meshkit.errors import InvalidArgument

# Messages whose JSON form is a plain string, so a query parameter can set them.
_STRING_LIKE_MESSAGES = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    *(f"google.protobuf.{w}Value" for w in
      ("String", "Bytes", "Bool", "Int32", "Int64", "UInt32", "UInt64", "Float", "Double")),
}
_TRUE, _FALSE = {"true", "1", "t", "yes"}, {"false", "0", "f", "no"}
_MAP_ENTRY = re.compile(r"^(?P<field>[^\[\]]+)\[(?P<key>[^\[\]]+)\]$")


@dataclass(frozen=True)
class Step:
    """One part of a field path; `key` is set for an entry of a map field."""

    field: FieldDescriptor
    key: str | None = None


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    return descriptor.fields_by_name.get(name) or next(
        (f for f in descriptor.fields if f.json_name == name), None
    )


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def split_field_path(path: str) -> list[str]:
    """`a.b[k.ey]` -> ["a", "b[k.ey]"]: dots split the path, except in the map key, which
    may hold dots of its own. A map entry may only end a path, so everything from the first
    bracket on belongs to the last part; one pass, whatever the path is made of."""
    head, bracket, key = path.partition("[")
    parts = head.split(".")
    parts[-1] += bracket + key
    return parts


def resolve(descriptor: Descriptor, path: str) -> list[Step] | None:
    """The fields a path names, or None if it names none. A map entry may only
    end a path, and its value must be a scalar."""
    steps: list[Step] = []
    for part in split_field_path(path):
        if descriptor is None or (steps and steps[-1].key is not None):
            return None
        entry = _MAP_ENTRY.match(part)
        field = _field(descriptor, entry["field"] if entry else part)
        if field is None or bool(entry) != _is_map(field):
            return None
        steps.append(Step(field, entry["key"] if entry else None))
        descriptor = field.message_type
    last = steps[-1]
    if last.key is not None and last.field.message_type.fields_by_name["value"].message_type is not None:
        return None
    return steps


def _scalar(field: FieldDescriptor, text: str):
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InvalidArgument(f"{text!r} is not a boolean", field=field.name)
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name == "google.protobuf.BoolValue":
        return _scalar(field.message_type.fields_by_name["value"], text)
    # json_format converts numbers, enums, bytes and Timestamps from strings.
    return text


def _set_path(target: dict, steps: list[Step], value: str) -> None:
    for step in steps[:-1]:
        target = target.setdefault(step.field.name, {})
        if not isinstance(target, dict):
            return
    leaf = steps[-1].field
    if steps[-1].key is not None:
        entries = target.setdefault(leaf.name, {})
        if isinstance(entries, dict):
            entries[steps[-1].key] = _scalar(leaf.message_type.fields_by_name["value"], value)
        return
    if leaf.type == FieldDescriptor.TYPE_MESSAGE and leaf.message_type.full_name not in _STRING_LIKE_MESSAGES:
        return  # a whole message cannot come from one string
    converted = _scalar(leaf, value)
    if leaf.is_repeated:
        target.setdefault(leaf.name, []).append(converted)
    else:
        target[leaf.name] = converted


def _known_fields_only(data, descriptor: Descriptor):
    """`data` without the fields the message does not have, at any depth.

    Unknown fields are ignored, as grpc-gateway ignores them; but protobuf's
    own `ignore_unknown_fields` also ignores enum values it does not know,
    which would turn a misspelt mode into the default one without a word.
    """
    if not isinstance(data, dict) or descriptor.full_name.startswith("google.protobuf."):
        return data  # not an object (Parse says so), or a well-known type with a JSON form of its own
    fields = {**{f.name: f for f in descriptor.fields}, **{f.json_name: f for f in descriptor.fields}}
    kept = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None and isinstance(value, dict):
                value = {k: _known_fields_only(v, value_field.message_type) for k, v in value.items()}
        elif field.message_type is not None:
            if isinstance(value, list) and field.is_repeated:
                value = [_known_fields_only(item, field.message_type) for item in value]
            else:
                value = _known_fields_only(value, field.message_type)
        kept[key] = value
    return kept


def _parse_dict(data: dict, message: Message) -> None:
    try:
        json_format.ParseDict(_known_fields_only(data, message.DESCRIPTOR), message)
    except json_format.ParseError as error:
        raise InvalidArgument(str(error)) from None


def parse_json(body: bytes):
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"malformed JSON body: {error}") from None
    except UnicodeDecodeError:
        raise InvalidArgument("malformed JSON body: not valid UTF-8") from None
    except RecursionError:
        raise InvalidArgument("malformed JSON body: nested too deeply") from None


def build_request(
    message_class: type[Message],
    body_field: str,
    path_variables: dict[str, str],
    query: Iterable[tuple[str, str]],
    body: bytes | None,
) -> Message:
    request = message_class()
    descriptor = request.DESCRIPTOR
    if body is not None and body_field:
        data = parse_json(body)
        if data is not None:
            if body_field == "*":
                if not isinstance(data, dict):
                    raise InvalidArgument("the request body must be a JSON object")
                _parse_dict(data, request)
            else:
                _parse_dict({body_field: data}, request)

    bound: dict = {}
    for path, value in path_variables.items():
        fields = resolve(descriptor, path)
        if fields is None:
            raise InvalidArgument(f"path variable {path!r} names no field")
        _set_path(bound, fields, value)
    if body_field != "*":
        taken = {path.split(".")[0] for path in path_variables} | {body_field}
        given: set[tuple] = set()
        for name, value in query:
            fields = resolve(descriptor, name)
            if fields is None or fields[0].field.name in taken:
                continue
            if not (fields[-1].field.is_repeated and fields[-1].key is None):
                # As grpc-gateway: one field, one value; else which one wins is a guess.
                named = tuple((step.field.name, step.key) for step in fields)
                if named in given:
                    raise InvalidArgument(f"query parameter {name!r} given more than once")
                given.add(named)
            _set_path(bound, fields, value)
    if bound:
        extra = message_class()
        _parse_dict(bound, extra)
        request.MergeFrom(extra)
    return request


def to_json_value(message: Message, field: str = ""):
    """The proto3 JSON form of the message, or of one of its fields."""
    if not field:
        return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    # Render the enclosing message and pick the field: any field type works.
    rendered = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    json_name = message.DESCRIPTOR.fields_by_name[field].json_name
    return rendered.get(json_name)


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
