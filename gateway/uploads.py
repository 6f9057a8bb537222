"""Request bodies of client-streaming RPCs.

multipart/form-data (what browsers and `curl -F` send) becomes one message
carrying the metadata, then the file's bytes in pieces. It is generic: the
request message must have one message field (the metadata: path variables,
form fields, and the file part's filename and content type fill it) and one
bytes field (the data). Any other body is newline-delimited JSON, one message
per line, as grpc-gateway accepts it.

Either way the body is parsed as it arrives, in one pass, and each message is
handed on before the next bytes are read: gRPC's flow control holds back the
reading, so the gateway keeps a few pieces of an upload, never the whole.
Every byte of the body counts against the upload limit, a JSON line against
the JSON body limit, form fields against their own number and size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from gateway import transcode
from gateway.rules import Route
from meshkit.errors import InvalidArgument, ResourceExhausted

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class UploadLimits:
    # Every byte of the body, multipart framing and fields included.
    max_bytes: int
    # One newline-delimited JSON message (a JSON body's limit).
    max_line_bytes: int
    # Form fields (parts without a filename): how many, and how large each.
    max_fields: int
    max_field_bytes: int
    # Seconds without a byte of the body before the upload is given up; None waits for the deadline.
    idle_seconds: float | None = None


class UploadIdle(Exception):
    """The client stopped sending its upload."""

    def __init__(self, seconds: float) -> None:
        self.message = f"no bytes of the upload arrived for {seconds:g} s; it was not kept"
        super().__init__(self.message)


def _upload_fields(message_class: type[Message]) -> tuple[FieldDescriptor, FieldDescriptor] | None:
    fields = message_class.DESCRIPTOR.fields
    meta = next((f for f in fields if f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated), None)
    data = next((f for f in fields if f.type == FieldDescriptor.TYPE_BYTES), None)
    return (meta, data) if meta and data else None


async def request_messages(
    route: Route,
    message_class: type[Message],
    variables: dict[str, str],
    request: Request,
    limits: UploadLimits,
) -> AsyncIterator[Message]:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    body = _body(request, limits)
    if content_type == b"multipart/form-data":
        fields = _upload_fields(message_class)
        if fields is None:
            raise InvalidArgument("this route does not accept multipart/form-data")
        boundary = options.get(b"boundary")
        if not boundary:
            raise InvalidArgument("multipart/form-data without a boundary")
        messages = _multipart(message_class, *fields, boundary, variables, body, limits)
    else:
        messages = _ndjson(message_class, variables, body, limits.max_line_bytes)
    async for message in messages:
        yield message


def _too_large(limits: UploadLimits) -> ResourceExhausted:
    return ResourceExhausted(f"upload over the {limits.max_bytes}-byte limit")


async def _body(request: Request, limits: UploadLimits) -> AsyncIterator[bytes]:
    """The body's pieces as they arrive, counted against the limit, each within the idle timeout."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(limits)
    pieces, total = request.stream(), 0
    while True:
        try:
            async with asyncio.timeout(limits.idle_seconds):
                piece = await anext(pieces)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadIdle(limits.idle_seconds) from None
        total += len(piece)
        if total > limits.max_bytes:
            raise _too_large(limits)
        if piece:
            yield piece


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.filename: str | None = None
        self.content_type = ""
        self.value = bytearray()


async def _multipart(
    message_class, meta_field, data_field, boundary, variables, body: AsyncIterator[bytes], limits: UploadLimits
) -> AsyncIterator[Message]:
    events: list[tuple[str, object]] = []
    # The parser bounds each part's headers (python-multipart's max_header_count and max_header_size).
    state = {"part": None, "header_field": b"", "header_value": b"", "fields": 0}

    def on_part_begin():
        state["part"] = _Part()

    def on_header_field(data, start, end):
        state["header_field"] += data[start:end]

    def on_header_value(data, start, end):
        state["header_value"] += data[start:end]

    def on_header_end():
        state["part"].headers[state["header_field"].lower()] = state["header_value"]
        state["header_field"] = state["header_value"] = b""

    def on_headers_finished():
        part = state["part"]
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition:
            part.filename = disposition[b"filename"].decode("utf-8", "replace")
            part.content_type = part.headers.get(b"content-type", b"").decode("latin-1")
            events.append(("file", part))
        else:
            state["fields"] += 1
            if state["fields"] > limits.max_fields:
                raise ResourceExhausted(f"more than {limits.max_fields} form fields")

    def on_part_data(data, start, end):
        part = state["part"]
        if part.filename is not None:
            events.append(("data", bytes(data[start:end])))
        else:
            part.value += data[start:end]
            if len(part.value) > limits.max_field_bytes:
                raise ResourceExhausted(f"form field {part.name!r} is over {limits.max_field_bytes} bytes")

    def on_part_end():
        part = state["part"]
        if part.filename is None:
            events.append(("field", (part.name, part.value.decode("utf-8", "replace"))))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin, "on_header_field": on_header_field,
            "on_header_value": on_header_value, "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    form: list[tuple[str, str]] = []
    file_seen, pending = False, bytearray()

    async for chunk in body:
        try:
            parser.write(chunk)
        except (InvalidArgument, ResourceExhausted):
            raise
        except Exception as error:  # python-multipart reports malformed bodies this way
            raise InvalidArgument(f"malformed multipart body: {error}") from None
        for kind, value in events:
            if kind == "field":
                if file_seen:
                    raise InvalidArgument("form fields must come before the file")
                form.append(value)
            elif kind == "file":
                if file_seen:
                    raise InvalidArgument("one file per upload")
                file_seen = True
                yield _metadata_message(message_class, meta_field, variables, form, value)
            else:
                pending += value
                if len(pending) >= CHUNK_BYTES:
                    yield message_class(**{data_field.name: bytes(pending)})
                    pending.clear()
        events.clear()
    parser.finalize()
    if not file_seen:
        raise InvalidArgument("no file part in the multipart body")
    if pending:
        yield message_class(**{data_field.name: bytes(pending)})


def _metadata_message(message_class, meta_field, variables, form, file_part: _Part) -> Message:
    meta_descriptor = meta_field.message_type
    values: dict[str, str] = {}
    for name, value in form:
        # Form fields name the metadata's fields, with or without its prefix.
        path = name[len(meta_field.name) + 1:] if name.startswith(meta_field.name + ".") else name
        values[path] = value
    for default_name, value in (("filename", file_part.filename), ("content_type", file_part.content_type)):
        if default_name in meta_descriptor.fields_by_name and default_name not in values and value:
            values[default_name] = value
    prefixed = {f"{meta_field.name}.{path}": value for path, value in values.items()}
    # Path variables last: the URL's kb id wins over a form field of the same name.
    return transcode.build_request(message_class, "", {**_known(message_class, prefixed), **variables}, (), None)


def _known(message_class, paths: dict[str, str]) -> dict[str, str]:
    descriptor = message_class.DESCRIPTOR
    return {p: v for p, v in paths.items() if transcode.resolve(descriptor, p) is not None}


async def _ndjson(message_class, variables, body: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[Message]:
    # Each piece is split once; only a line's unfinished end is carried to the next piece.
    carry, first = bytearray(), True

    def message(line: bytes) -> Message:
        nonlocal first
        # Path variables belong to the opening message (the one with metadata).
        built = transcode.build_request(message_class, "*", variables if first else {}, (), line)
        first = False
        return built

    async for piece in body:
        *ended, unfinished = piece.split(b"\n")
        for part in ended:
            if len(carry) + len(part) > max_line_bytes:
                raise ResourceExhausted(f"a line of the upload is over the {max_line_bytes}-byte limit")
            line = bytes(carry + part) if carry else part
            carry.clear()
            if line.strip():
                yield message(line)
        carry += unfinished
        if len(carry) > max_line_bytes:
            raise ResourceExhausted(f"a line of the upload is over the {max_line_bytes}-byte limit")
    if carry.strip():
        yield message(bytes(carry))
