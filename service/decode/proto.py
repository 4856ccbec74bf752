"""Protobuf payloads -> Python objects, with the message type the wire format names.

A registry holds Protobuf schemas as `.proto` text. It is compiled once per schema with
protoc (grpcio-tools ships it as a library: no binary to install, and a real compiler
rather than a hand-written parser) into descriptors in a pool of the schema's own, so
two versions of one message never collide. After the 5-byte header, the Confluent
format puts the message indexes (zigzag varints: a count, then the path through nested
types; a single 0 means the first message) and then the message.

A decoded message becomes a dict of the fields it carries (`ListFields`: a proto3
scalar left at its default, such as `open = 0`, counts as absent, as SPEC 1's null
does); a repeated message field becomes a list of dicts. Anything that does not parse
is `None`, the caller's `invalid_protobuf`.
"""

from __future__ import annotations

import importlib.resources
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

__all__ = ["decode_protobuf", "message_class", "message_indexes"]

_FILES: dict[str, FileDescriptor] = {}
_CLASSES: dict[tuple[str, tuple[int, ...]], type[Message]] = {}
_CACHE_LIMIT = 1_000
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _zigzag(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """One zigzag varint at `pos`: (value, next position); IndexError when cut short."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def message_indexes(payload: bytes | memoryview) -> tuple[tuple[int, ...], int]:
    """The message-index path and where the message starts (IndexError when malformed)."""
    count, pos = _zigzag(payload, 0)
    if count == 0:
        return (0,), pos
    if not 0 < count <= 32:
        raise IndexError("bad message-index count")
    path = []
    for _ in range(count):
        index, pos = _zigzag(payload, pos)
        path.append(index)
    return tuple(path), pos


def _compiled(text: str) -> FileDescriptor:
    """The schema text compiled by protoc into a pool of its own (cached by text)."""
    found = _FILES.get(text)
    if found is not None:
        return found
    from grpc_tools import protoc  # heavy: imported only when a Protobuf schema comes

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="sfa-proto-") as tmp:
        source = os.path.join(tmp, "schema.proto")
        out = os.path.join(tmp, "schema.pb")
        with open(source, "w", encoding="utf-8") as f:
            f.write(text)
        args = ["protoc", f"-I{tmp}", f"-I{include}", "--include_imports"]
        if protoc.main([*args, f"--descriptor_set_out={out}", source]) != 0:
            raise ValueError("protoc could not compile the schema")
        with open(out, "rb") as f:
            files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    compiled = pool.FindFileByName("schema.proto")
    if len(_FILES) >= _CACHE_LIMIT:
        _FILES.clear()
        _CLASSES.clear()
    _FILES[text] = compiled
    return compiled


def message_class(text: str, path: tuple[int, ...]) -> type[Message]:
    """The message type at `path` (message indexes) of a schema text."""
    key = (text, path)
    cls = _CLASSES.get(key)
    if cls is None:
        # Declaration order: the order of the message indexes.
        descriptor: Descriptor = list(_compiled(text).message_types_by_name.values())[path[0]]
        for index in path[1:]:
            descriptor = descriptor.nested_types[index]
        cls = message_factory.GetMessageClass(descriptor)
        _CLASSES[key] = cls
    return cls


def _plain(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.type == _MESSAGE and field.is_repeated:
            out[field.name] = [_plain(v) for v in value]
        elif field.type == _MESSAGE:
            out[field.name] = _plain(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def decode_protobuf(payloads: Sequence[bytes | memoryview], schema_text: str) -> list[Any | None]:
    """Each payload (after the 5-byte header) as a dict, or None when it does not parse;
    ValueError when the schema does not compile."""
    _compiled(schema_text)
    out: list[Any | None] = []
    for payload in payloads:
        try:
            path, start = message_indexes(payload)
            cls = message_class(schema_text, path)
            out.append(_plain(cls.FromString(bytes(payload[start:]))))
        except (IndexError, KeyError, DecodeError, ValueError):
            out.append(None)
    return out
