"""Seed data: the JSON format that fills a fresh emulator, and the bundled demo seed.

A seed is a JSON object (keys not listed are rejected, to catch typos)::

    {
      "comment": "free text, ignored",
      "domains": [
        {
          "name": "demo",                                  # required
          "createdTime": "2025-01-06T09:00:00Z",           # optional, default: now
          "encryptionKey": "arn:aws:kms:...",              # optional
          "repositories": [
            {
              "name": "dev-shared",                        # required
              "description": "...",                        # optional
              "createdTime": "2025-01-06T09:05:00Z",       # optional, default: domain's
              "upstreams": ["other-repo"],                 # optional, repos defined earlier
              "packages": [
                {
                  "format": "npm",                         # required, CodeArtifact format
                  "namespace": "acme",                     # optional/required per format
                  "name": "widgets",                       # required
                  "versions": [
                    {
                      "version": "2.0.0",                  # required
                      "status": "Published",               # optional, default Published
                      "revision": "base64...",             # optional, default: stable hash
                      "publishedTime": "2025-03-01T10:00:00Z"  # optional, default: repo's
                    }
                  ]
                }
              ]
            }
          ]
        }
      ]
    }

Every domain belongs to the emulator's account. Times are ISO 8601 with a zone. A missing
revision defaults to ``stable_revision(domain, repository, format, namespace, name, version)``
so that seeded revisions are the same in every run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ._errors import ServiceError
from ._state import STORED_STATUSES, PackageRef, Store, stable_revision

__all__ = ["Seed", "SeedError", "build_store", "load_demo_seed", "load_seed_file"]

Seed = Mapping[str, Any]


class SeedError(ValueError):
    """Raised when seed data does not follow the seed format; the message names the place."""


def load_demo_seed() -> dict[str, Any]:
    """Return the bundled demo seed (``seeds/demo.json``), parsed."""
    text = resources.files(__package__).joinpath("seeds", "demo.json").read_text("utf-8")
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def load_seed_file(path: str | Path) -> dict[str, Any]:
    """Read and parse a seed file; raise SeedError if it is not a JSON object."""
    try:
        parsed = json.loads(Path(path).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SeedError(f"cannot read seed {path}: {error}") from error
    if not isinstance(parsed, dict):
        raise SeedError(f"seed {path} must contain a JSON object")
    return parsed


def _fields(
    value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SeedError(f"{where}: expected an object")
    unknown = set(value) - set(required) - set(optional)
    if unknown:
        raise SeedError(f"{where}: unknown keys {sorted(unknown)}")
    missing = [key for key in required if key not in value]
    if missing:
        raise SeedError(f"{where}: missing keys {missing}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SeedError(f"{where}: expected a non-empty string")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SeedError(f"{where}: expected a list")
    return value


def _time(value: Any, where: str, default: dt.datetime) -> dt.datetime:
    if value is None:
        return default
    try:
        parsed = dt.datetime.fromisoformat(_string(value, where).replace("Z", "+00:00"))
    except ValueError as error:
        raise SeedError(f"{where}: not an ISO 8601 time: {value!r}") from error
    if parsed.tzinfo is None:
        raise SeedError(f"{where}: the time needs a zone, e.g. 'Z'")
    return parsed.astimezone(dt.UTC)


@contextlib.contextmanager
def _at(where: str) -> Iterator[None]:
    """Report a rule the store enforces (duplicates, namespaces) as a SeedError at ``where``."""
    try:
        yield
    except (ServiceError, ValueError) as error:
        if isinstance(error, SeedError):
            raise
        raise SeedError(f"{where}: {error}") from error


def build_store(
    seed: Seed | None,
    *,
    account_id: str,
    region: str,
    clock: Callable[[], dt.datetime],
    revisions: Callable[[], str],
) -> Store:
    """Return a new Store holding the seed's domains; raise SeedError for malformed seeds."""
    store = Store(account_id=account_id, region=region, clock=clock, revisions=revisions)
    if seed is None:
        return store
    top = _fields(seed, "seed", (), ("comment", "domains"))
    for index, domain in enumerate(_list(top.get("domains", []), "seed.domains")):
        _seed_domain(store, domain, f"seed.domains[{index}]")
    return store


def _seed_domain(store: Store, raw: Any, where: str) -> None:
    domain = _fields(raw, where, ("name",), ("createdTime", "encryptionKey", "repositories"))
    name = _string(domain["name"], f"{where}.name")
    created = _time(domain.get("createdTime"), f"{where}.createdTime", store.clock())
    with _at(where):
        store.create_domain(name, encryption_key=domain.get("encryptionKey"), created_time=created)
    for index, repo in enumerate(_list(domain.get("repositories", []), f"{where}.repositories")):
        _seed_repository(store, name, created, repo, f"{where}.repositories[{index}]")


def _seed_repository(
    store: Store, domain: str, domain_created: dt.datetime, raw: Any, where: str
) -> None:
    repo = _fields(raw, where, ("name",), ("description", "createdTime", "upstreams", "packages"))
    name = _string(repo["name"], f"{where}.name")
    created = _time(repo.get("createdTime"), f"{where}.createdTime", domain_created)
    with _at(where):
        store.create_repository(
            domain,
            name,
            description=repo.get("description"),
            upstreams=_list(repo.get("upstreams", []), f"{where}.upstreams"),
            created_time=created,
        )
    for index, raw_package in enumerate(_list(repo.get("packages", []), f"{where}.packages")):
        p_where = f"{where}.packages[{index}]"
        package = _fields(raw_package, p_where, ("format", "name"), ("namespace", "versions"))
        namespace = package.get("namespace")
        ref = PackageRef(
            domain=domain,
            repository=name,
            format=_string(package["format"], f"{p_where}.format"),
            namespace=None if namespace is None else _string(namespace, f"{p_where}.namespace"),
            package=_string(package["name"], f"{p_where}.name"),
        )
        with _at(p_where):
            store.ensure_package(ref)
        for v_index, version in enumerate(
            _list(package.get("versions", []), f"{p_where}.versions")
        ):
            _seed_version(store, ref, created, version, f"{p_where}.versions[{v_index}]")


def _seed_version(
    store: Store, ref: PackageRef, repo_created: dt.datetime, raw: Any, where: str
) -> None:
    version = _fields(raw, where, ("version",), ("status", "revision", "publishedTime"))
    number = _string(version["version"], f"{where}.version")
    status = version.get("status", "Published")
    if status not in STORED_STATUSES:
        raise SeedError(f"{where}.status: {status!r} is not one of {', '.join(STORED_STATUSES)}")
    revision = version.get("revision")
    if revision is None:
        revision = stable_revision(
            ref.domain, ref.repository, ref.format, ref.namespace or "", ref.package, number
        )
    with _at(where):
        store.put_version(
            ref,
            number,
            status=status,
            published_time=_time(
                version.get("publishedTime"), f"{where}.publishedTime", repo_created
            ),
            revision=_string(revision, f"{where}.revision"),
        )
