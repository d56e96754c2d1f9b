"""The entities file: which groups exist, which principals are in them and whom each
principal belongs to (YAML or JSON).

Format::

    groups:
      ci: {description: Build automation.}
    principals:
      "spiffe://example.org/ci/builder": {groups: [ci], description: The CI builder.}
      "spiffe://example.org/ops/alice": {groups: [release-admins], person: alice}
      alice: {groups: [release-admins], person: alice}

``person`` names whom a principal id belongs to (default: the id itself), so that the
identity forms of one person (a certificate, a development name) count as one: a requester
never approves their own deletion request under another form. A person named like a listed
principal must be that principal's person too (``person: alice`` above needs ``alice`` to be
alice's, as it is by default), or the two would not be one.

Errors name the file and, where it can be found, the line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pkggov_gateway.adapters.cedar_source import PolicyLoadError

__all__ = ["GROUP_TYPE", "Document", "EntitiesFile", "load_entities", "read_document"]

GROUP_TYPE = "Pkggov::Group"

_Key = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class EntitiesFile:
    """The groups (in file order), each listed principal's groups and persons."""

    groups: tuple[str, ...]
    members: Mapping[str, tuple[str, ...]]
    persons: Mapping[str, str] = field(default_factory=dict)
    """Principal id -> its person, for the principals whose person is not their id."""

    def person_of(self, principal_id: str) -> str:
        """Whom `principal_id` belongs to: its ``person``, else the id itself."""
        return self.persons.get(principal_id, principal_id)

    def cedar_json(self) -> str:
        """The groups as a Cedar JSON entities document (principals are added per decision)."""
        return json.dumps(
            [
                {"uid": {"type": GROUP_TYPE, "id": name}, "attrs": {}, "parents": []}
                for name in self.groups
            ]
        )


class Document:
    """A parsed YAML/JSON document and the line of each key, to point errors at."""

    def __init__(self, path: Path, data: Any, lines: Mapping[_Key, int]) -> None:
        self.path = path
        self.data = data
        self._lines = lines

    def line_of(self, key: _Key) -> int | None:
        """The line of `key`, or of the nearest enclosing key whose line is known."""
        for end in range(len(key), -1, -1):
            line = self._lines.get(key[:end])
            if line is not None:
                return line
        return None

    def error(self, key: _Key, message: str) -> PolicyLoadError:
        """An error about the value at `key`, located at `line_of(key)`."""
        return PolicyLoadError(self.path, self.line_of(key), message)


def read_document(path: Path) -> Document:
    """Read a YAML (.yaml, .yml) or JSON (.json) file, refusing duplicate keys."""
    suffix = path.suffix.lower()
    if suffix not in {".yaml", ".yml", ".json"}:
        raise PolicyLoadError(path, None, "expected a .yaml, .yml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyLoadError(path, None, f"cannot read: {err}") from err
    if suffix == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as err:
            raise PolicyLoadError(path, err.lineno, f"invalid JSON: {err.msg}") from err
        except _DuplicateKeyError as err:
            raise PolicyLoadError(path, None, str(err)) from err
        try:
            lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader), path)
        except (yaml.YAMLError, PolicyLoadError):
            lines = {}  # valid JSON that YAML cannot read: errors go without a line
        return Document(path, data, lines)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(err, "problem", None) or str(err)
        raise PolicyLoadError(path, line, f"invalid YAML: {problem}") from err
    return Document(path, data, _key_lines(node, path))


class _DuplicateKeyError(ValueError):
    """Raised by the JSON reader for an object with the same key twice."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _key_lines(node: yaml.Node | None, path: Path) -> dict[_Key, int]:
    lines: dict[_Key, int] = {}
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _walk(node, (), lines, path)
    return lines


def _walk(node: yaml.Node, key: _Key, lines: dict[_Key, int], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            name = str(key_node.value)
            line = key_node.start_mark.line + 1
            if name in seen:
                raise PolicyLoadError(path, line, f"duplicate key {name!r}")
            seen.add(name)
            lines[(*key, name)] = line
            _walk(value_node, (*key, name), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*key, index)] = item.start_mark.line + 1
            _walk(item, (*key, index), lines, path)


def load_entities(path: Path) -> EntitiesFile:
    """Read and check an entities file; raise PolicyLoadError naming the file and line."""
    doc = read_document(path)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise doc.error((), "expected a mapping with 'groups' and 'principals'")
    _only_keys(doc, (), data, {"groups", "principals"})
    groups = _mapping(doc, ("groups",), data.get("groups"))
    for name, value in groups.items():
        _described(doc, ("groups", name), value, set())
    members: dict[str, tuple[str, ...]] = {}
    persons: dict[str, str] = {}
    principals = _mapping(doc, ("principals",), data.get("principals"))
    for principal, value in principals.items():
        where: _Key = ("principals", principal)
        entry = _described(doc, where, value, {"groups", "person"})
        person = entry.get("person", principal)
        if not isinstance(person, str) or not person.strip():
            raise doc.error(
                (*where, "person"), f"principal {principal!r}: person must be a non-empty string"
            )
        if person != principal:
            persons[principal] = person
        listed = entry.get("groups")
        if listed is None:
            listed = []
        if not isinstance(listed, list):
            raise doc.error((*where, "groups"), f"principal {principal!r}: groups must be a list")
        names: list[str] = []
        for index, group in enumerate(listed):
            if not isinstance(group, str) or group not in groups:
                known = ", ".join(groups) or "none are defined"
                raise doc.error(
                    (*where, "groups", index),
                    f"principal {principal!r}: unknown group {group!r} (groups: {known})",
                )
            if group not in names:
                names.append(group)
        members[principal] = tuple(names)
    for principal, person in persons.items():
        # A person spelled like a listed principal is that principal's person as well: else
        # `alice` (person "Alice") and `spiffe://.../alice` (person "alice") would be two.
        if person in principals and persons.get(person, person) != person:
            raise doc.error(
                ("principals", principal, "person"),
                f"principal {principal!r}: person {person!r} is also a principal whose person "
                f"is {persons[person]!r}: give both the same person",
            )
    return EntitiesFile(tuple(groups), members, persons)


def _only_keys(doc: Document, where: _Key, value: dict[Any, Any], allowed: set[str]) -> None:
    for key in value:
        if key not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise doc.error((*where, str(key)), f"unknown key {key!r} (expected: {expected})")


def _mapping(doc: Document, where: _Key, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(where, f"{where[-1]} must be a mapping of names")
    for name in value:
        if not isinstance(name, str) or not name:
            raise doc.error((*where, str(name)), f"{where[-1]}: {name!r} is not a non-empty string")
    return value


def _described(doc: Document, where: _Key, value: Any, keys: set[str]) -> dict[str, Any]:
    """An entry of `keys` plus an optional string description (an empty entry is {})."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(where, f"{where[0]} {where[-1]!r}: expected a mapping")
    _only_keys(doc, where, value, keys | {"description"})
    description = value.get("description")
    if description is not None and not isinstance(description, str):
        raise doc.error((*where, "description"), "description must be a string")
    return value
