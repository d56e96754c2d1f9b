"""The CodeArtifact REST-JSON protocol, driven entirely by botocore's service model.

Routing by HTTP method and request URI, parsing each input member from its location, validating
every model constraint with AWS's wording, and serializing outputs and errors.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
from collections.abc import Mapping
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, cast

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from ._constants import SERVICE_NAME
from ._errors import ValidationError
from ._patterns import compile_java_pattern
from ._wire import Request

__all__ = [
    "error_status",
    "find_operation",
    "operation_model",
    "parse_input",
    "serialize_output",
    "service_model",
    "validate_input",
    "warm_up_patterns",
]


@functools.cache
def service_model() -> ServiceModel:
    """Return botocore's CodeArtifact model, loaded once per process."""
    return botocore.session.get_session().get_service_model(SERVICE_NAME)


@functools.cache
def _routes() -> dict[tuple[str, str], str]:
    """Map (HTTP method, path) to operation name. CodeArtifact's URIs have no path labels."""
    model = service_model()
    routes: dict[tuple[str, str], str] = {}
    for name in model.operation_names:
        http = model.operation_model(name).http
        path = str(http["requestUri"]).split("?", 1)[0]
        if "{" in path:
            raise ValueError(f"{name}: URI labels are not supported ({path})")
        routes[(str(http["method"]).upper(), path)] = name
    return routes


def find_operation(method: str, path: str) -> str | None:
    """Return the operation served at ``method path`` (decoded path), or None."""
    normalized = path.rstrip("/") or "/"
    return _routes().get((method.upper(), normalized))


def operation_model(name: str) -> OperationModel:
    """Return the botocore operation model for ``name``."""
    return service_model().operation_model(name)


@functools.cache
def _error_shapes() -> dict[str, StructureShape]:
    return {shape.name: cast(StructureShape, shape) for shape in service_model().error_shapes}


def error_shape(code: str) -> StructureShape | None:
    """Return the model's error shape for an error code, or None if it is not modeled."""
    return _error_shapes().get(code)


def error_status(code: str) -> int | None:
    """Return ``error.httpStatusCode`` of a modeled error, or None if it is not modeled."""
    shape = error_shape(code)
    if shape is None:
        return None
    return int(shape.metadata["error"]["httpStatusCode"])


def warm_up_patterns() -> None:
    """Compile every pattern in the model now (the Unicode-class ones cost ~0.3 s once)."""
    model = service_model()
    for name in model.shape_names:
        pattern = model.shape_for(name).metadata.get("pattern")
        if pattern is not None:
            compile_java_pattern(pattern)


# ---------------------------------------------------------------------------------------------
# Parsing: wire values to Python values. Parsing is lenient (a value of the wrong type is kept
# as received) so that validation can report every bad field at once, like AWS does.


def _timestamp_from_text(text: str) -> dt.datetime | str:
    try:
        return dt.datetime.fromtimestamp(float(text), tz=dt.UTC)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return text
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _from_text(shape: Shape, text: str) -> Any:
    """Convert a query string or header value according to its shape."""
    kind = shape.type_name
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            return text
    if kind in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "boolean":
        lowered = text.lower()
        return {"true": True, "false": False}.get(lowered, text)
    if kind == "timestamp":
        return _timestamp_from_text(text)
    return text


def _from_json(shape: Shape, value: Any) -> Any:
    """Convert a decoded JSON value according to its shape."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        members = cast(StructureShape, shape).members
        return {
            name: _from_json(member, value[_wire_name(member, name)])
            for name, member in members.items()
            if value.get(_wire_name(member, name)) is not None
        }
    if kind == "list" and isinstance(value, list):
        element = cast(ListShape, shape).member
        return [None if item is None else _from_json(element, item) for item in value]
    if kind == "map" and isinstance(value, dict):
        value_shape = cast(MapShape, shape).value
        return {
            key: None if item is None else _from_json(value_shape, item)
            for key, item in value.items()
        }
    if kind == "timestamp":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        if isinstance(value, str):
            return _timestamp_from_text(value)
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value
    return value


def _wire_name(member: Shape, name: str) -> str:
    return str(member.serialization.get("name", name))


def _load_json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValidationError(
            f"Could not parse the request body as JSON: {error}", reason="CANNOT_PARSE"
        ) from error


def parse_input(operation: OperationModel, request: Request) -> dict[str, Any]:
    """Read every input member from its location (query string, header or body).

    Raises ValidationError(CANNOT_PARSE) when the JSON body is malformed.
    """
    shape = operation.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    query = request.query_pairs()
    payload_name = shape.serialization.get("payload")
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = _wire_name(member, name)
        if location == "querystring":
            values = [value for key, value in query if key == wire]
            if not values:
                continue
            if member.type_name == "list":
                element = cast(ListShape, member).member
                params[name] = [_from_text(element, value) for value in values]
            else:
                params[name] = _from_text(member, values[0])
        elif location == "header":
            header = request.header(wire)
            if header is not None:
                params[name] = _from_text(member, header)
    if payload_name is not None:
        payload = shape.members[payload_name]
        if payload.type_name == "blob":
            params[payload_name] = request.body
        elif payload.type_name == "string":
            params[payload_name] = request.body.decode("utf-8", errors="replace")
        elif request.body.strip():
            params[payload_name] = _from_json(payload, _load_json_body(request.body))
        return params
    document = _load_json_body(request.body)
    if not isinstance(document, dict):
        raise ValidationError("The request body must be a JSON object", reason="CANNOT_PARSE")
    for name, member in shape.members.items():
        if "location" in member.serialization:
            continue
        value = document.get(_wire_name(member, name))
        if value is not None:
            params[name] = _from_json(member, value)
    return params


# ---------------------------------------------------------------------------------------------
# Validation: every constraint of the model, reported with AWS's wording.


def _render(value: Any) -> str:
    """Render a value the way AWS (Java's toString) prints it in validation messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}={_render(item)}" for key, item in value.items()) + "}"
    if isinstance(value, bytes):
        return f"java.nio.HeapByteBuffer[pos=0 lim={len(value)} cap={len(value)}]"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


_TYPE_CHECKS: dict[str, tuple[type[Any], ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "boolean": (bool,),
    "blob": (bytes,),
    "timestamp": (dt.datetime,),
    "structure": (dict,),
    "list": (list,),
    "map": (dict,),
}


def _check(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    def fail(constraint: str) -> None:
        errors.append(
            f"Value '{_render(value)}' at '{path}' failed to satisfy constraint: {constraint}"
        )

    kind = shape.type_name
    expected = _TYPE_CHECKS.get(kind, (object,))
    is_wrong_bool = isinstance(value, bool) and kind in ("integer", "long", "float", "double")
    if not isinstance(value, expected) or is_wrong_bool:
        fail(f"Member must be of type {kind}")
        return
    meta = shape.metadata
    if kind == "structure":
        _check_structure(cast(StructureShape, shape), value, path, errors)
    elif kind in ("string", "blob", "list", "map"):
        length = len(value)
        if "min" in meta and length < meta["min"]:
            fail(f"Member must have length greater than or equal to {meta['min']}")
        if "max" in meta and length > meta["max"]:
            fail(f"Member must have length less than or equal to {meta['max']}")
        if kind == "string":
            if "pattern" in meta and not compile_java_pattern(meta["pattern"]).fullmatch(value):
                fail(f"Member must satisfy regular expression pattern: {meta['pattern']}")
            enum = meta.get("enum")
            if enum and value not in enum:
                fail(f"Member must satisfy enum value set: [{', '.join(enum)}]")
        elif kind == "list":
            element = cast(ListShape, shape).member
            for index, item in enumerate(value, start=1):
                item_path = f"{path}.{index}.member"
                if item is None:
                    errors.append(
                        f"Value null at '{item_path}' failed to satisfy constraint: "
                        "Member must not be null"
                    )
                else:
                    _check(element, item, item_path, errors)
        elif kind == "map":
            map_shape = cast(MapShape, shape)
            for index, (key, item) in enumerate(value.items(), start=1):
                _check(map_shape.key, key, f"{path}.{index}.key", errors)
                if item is None:
                    errors.append(
                        f"Value null at '{path}.{index}.value' failed to satisfy constraint: "
                        "Member must not be null"
                    )
                else:
                    _check(map_shape.value, item, f"{path}.{index}.value", errors)
    elif kind in ("integer", "long", "float", "double"):
        if "min" in meta and value < meta["min"]:
            fail(f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            fail(f"Member must have value less than or equal to {meta['max']}")


def _check_structure(
    shape: StructureShape, value: Mapping[str, Any], prefix: str, errors: list[str]
) -> None:
    for name, member in shape.members.items():
        path = f"{prefix}.{name}" if prefix else name
        item = value.get(name)
        if item is None:
            if name in shape.required_members:
                errors.append(
                    f"Value null at '{path}' failed to satisfy constraint: Member must not be null"
                )
            continue
        _check(member, item, path, errors)


def validate_input(operation: OperationModel, params: Mapping[str, Any]) -> None:
    """Check ``params`` against every constraint of the operation's input shape.

    Raises ValidationError(FIELD_VALIDATION_FAILED) naming each bad field.
    """
    shape = operation.input_shape
    if shape is None:
        return
    errors: list[str] = []
    _check_structure(shape, params, "", errors)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise ValidationError(
            f"{count} validation {noun} detected: " + "; ".join(errors),
            reason="FIELD_VALIDATION_FAILED",
        )


# ---------------------------------------------------------------------------------------------
# Serialization: Python values to REST-JSON.


def _epoch(value: dt.datetime) -> float:
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.timestamp()


def _to_json(shape: Shape, value: Any) -> Any:
    kind = shape.type_name
    if kind == "structure":
        members = cast(StructureShape, shape).members
        unknown = set(value) - set(members)
        if unknown:
            raise ValueError(f"{shape.name} has no members {sorted(unknown)}")
        return {
            _wire_name(members[name], name): _to_json(members[name], item)
            for name, item in value.items()
            if item is not None
        }
    if kind == "list":
        element = cast(ListShape, shape).member
        return [_to_json(element, item) for item in value]
    if kind == "map":
        value_shape = cast(MapShape, shape).value
        return {key: _to_json(value_shape, item) for key, item in value.items()}
    if kind == "timestamp":
        timestamp_format = shape.serialization.get("timestampFormat", "unixTimestamp")
        if timestamp_format == "iso8601":
            return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        if timestamp_format == "rfc822":
            return format_datetime(value.astimezone(dt.UTC), usegmt=True)
        return _epoch(value)
    if kind == "blob":
        return base64.b64encode(value).decode("ascii")
    return value


def _to_text(shape: Shape, value: Any) -> str:
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        return format_datetime(value.astimezone(dt.UTC), usegmt=True)
    return str(value)


def serialize_output(
    shape: StructureShape | None, values: Mapping[str, Any]
) -> tuple[list[tuple[str, str]], bytes]:
    """Serialize an output (or error) structure into header pairs and a JSON body.

    Raises ValueError for a member the shape does not have (a bug in the emulator).
    """
    headers: list[tuple[str, str]] = []
    body: dict[str, Any] = {}
    if shape is None:
        return headers, b"{}"
    if shape.serialization.get("payload") is not None:
        raise ValueError(f"{shape.name}: payload outputs are not supported")
    for name, value in values.items():
        if value is None:
            continue
        member = shape.members.get(name)
        if member is None:
            raise ValueError(f"{shape.name} has no member {name!r}")
        location = member.serialization.get("location")
        if location == "header":
            headers.append((_wire_name(member, name), _to_text(member, value)))
        elif location is None:
            body[_wire_name(member, name)] = _to_json(member, value)
        else:
            raise ValueError(f"{shape.name}.{name}: location {location} is not supported")
    return headers, json.dumps(body, separators=(",", ":")).encode("utf-8")
