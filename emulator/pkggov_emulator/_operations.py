"""Operation handlers: validated model parameters in, model-shaped output dictionaries out.

Each handler runs with the store's lock held and maps one CodeArtifact operation onto the
domain model in ``_state``; list operations share one cursor-based pagination scheme whose
tokens survive deletions between pages.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ._errors import ValidationError
from ._state import (
    NAMESPACE_FORBIDDEN,
    BatchResult,
    Domain,
    Package,
    PackageRef,
    PackageVersion,
    Repository,
    Store,
    check_namespace,
)

__all__ = ["OPERATIONS", "Handler", "package_ref"]

Handler = Callable[[Store, Mapping[str, Any]], dict[str, Any]]
_T = TypeVar("_T")
_Key = tuple[str | float, ...]

DEFAULT_PAGE_SIZE = 50


# ---- pagination --------------------------------------------------------------------------------


def _encode_token(operation: str, key: _Key) -> str:
    raw = json.dumps({"op": operation, "after": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def _decode_token(operation: str, token: str) -> _Key:
    invalid = ValidationError(
        "The pagination token is invalid or belongs to another operation.",
        reason="FIELD_VALIDATION_FAILED",
    )
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise invalid from error
    if not isinstance(decoded, dict) or decoded.get("op") != operation:
        raise invalid
    after = decoded.get("after")
    if not isinstance(after, list) or not all(
        isinstance(part, str | float | int) for part in after
    ):
        raise invalid
    return tuple(after)


def _paginate(
    operation: str,
    items: Sequence[_T],
    key: Callable[[_T], _Key],
    params: Mapping[str, Any],
    default_page_size: int = DEFAULT_PAGE_SIZE,
) -> tuple[list[_T], str | None]:
    """Sort ``items`` by ``key`` and return one page plus the token of the next, if any.

    The token holds the last returned key, so items deleted between pages do not shift pages.
    """
    ordered = sorted(items, key=key)
    token = params.get("nextToken")
    if token is not None:
        cursor = _decode_token(operation, token)
        try:
            ordered = [item for item in ordered if key(item) > cursor]
        except TypeError as error:
            raise ValidationError(
                "The pagination token is invalid.", reason="FIELD_VALIDATION_FAILED"
            ) from error
    limit = int(params.get("maxResults") or default_page_size)
    page = ordered[:limit]
    next_token = _encode_token(operation, key(page[-1])) if len(ordered) > limit else None
    return page, next_token


def _natural(version: str) -> str:
    """Sort key that orders the digit runs of a version numerically (1.0.10 after 1.0.9)."""
    return re.sub(r"\d+", lambda match: match.group().zfill(20), version)


# ---- shared shapes -----------------------------------------------------------------------------


def package_ref(params: Mapping[str, Any]) -> PackageRef:
    """Build the package coordinates of a request and apply the namespace rule of its format."""
    ref = PackageRef(
        domain=params["domain"],
        repository=params["repository"],
        format=params["format"],
        namespace=params.get("namespace"),
        package=params["package"],
        domain_owner=params.get("domainOwner"),
    )
    check_namespace(ref.format, ref.namespace)
    return ref


def _domain_summary(store: Store, domain: Domain) -> dict[str, Any]:
    return {
        "name": domain.name,
        "owner": store.account_id,
        "arn": store.domain_arn(domain.name),
        "status": "Active",
        "createdTime": domain.created_time,
        "encryptionKey": domain.encryption_key,
    }


def _domain_description(store: Store, domain: Domain) -> dict[str, Any]:
    return {
        **_domain_summary(store, domain),
        "repositoryCount": len(domain.repositories),
        "assetSizeBytes": domain.asset_size_bytes(),
        "s3BucketArn": f"arn:aws:s3:::assets-{store.account_id}-{store.region}",
    }


def _repository_summary(store: Store, domain: str, repository: Repository) -> dict[str, Any]:
    return {
        "name": repository.name,
        "administratorAccount": store.account_id,
        "domainName": domain,
        "domainOwner": store.account_id,
        "arn": store.repository_arn(domain, repository.name),
        "description": repository.description,
        "createdTime": repository.created_time,
    }


def _repository_description(store: Store, domain: str, repository: Repository) -> dict[str, Any]:
    return {
        **_repository_summary(store, domain, repository),
        "upstreams": [{"repositoryName": name} for name in repository.upstreams],
        "externalConnections": [],
    }


def _origin_configuration(package: Package) -> dict[str, Any]:
    return {"restrictions": {"publish": package.publish, "upstream": package.upstream}}


def _origin(repository: str) -> dict[str, Any]:
    return {"domainEntryPoint": {"repositoryName": repository}, "originType": "INTERNAL"}


def _batch_output(result: BatchResult) -> dict[str, Any]:
    return {
        "successfulVersions": {
            version: {"revision": revision, "status": status}
            for version, (revision, status) in result.successful.items()
        },
        "failedVersions": {
            version: {"errorCode": code, "errorMessage": message}
            for version, (code, message) in result.failed.items()
        },
    }


# ---- domains and repositories ------------------------------------------------------------------


def create_domain(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateDomain."""
    domain = store.create_domain(params["domain"], encryption_key=params.get("encryptionKey"))
    return {"domain": _domain_description(store, domain)}


def describe_domain(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """DescribeDomain."""
    domain = store.domain(params["domain"], params.get("domainOwner"))
    return {"domain": _domain_description(store, domain)}


def list_domains(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListDomains, sorted by name."""
    page, token = _paginate(
        "ListDomains", list(store.domains.values()), lambda d: (d.name,), params
    )
    return {"domains": [_domain_summary(store, d) for d in page], "nextToken": token}


def create_repository(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateRepository."""
    repository = store.create_repository(
        params["domain"],
        params["repository"],
        owner=params.get("domainOwner"),
        description=params.get("description"),
        upstreams=[upstream["repositoryName"] for upstream in params.get("upstreams", [])],
    )
    return {"repository": _repository_description(store, params["domain"], repository)}


def describe_repository(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """DescribeRepository."""
    repository = store.repository(params["domain"], params["repository"], params.get("domainOwner"))
    return {"repository": _repository_description(store, params["domain"], repository)}


def list_repositories(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListRepositories across all domains, sorted by domain then name."""
    prefix = params.get("repositoryPrefix", "")
    items = [
        (domain.name, repository)
        for domain in store.domains.values()
        for repository in domain.repositories.values()
        if repository.name.startswith(prefix)
    ]
    page, token = _paginate("ListRepositories", items, lambda i: (i[0], i[1].name), params)
    return {
        "repositories": [_repository_summary(store, d, r) for d, r in page],
        "nextToken": token,
    }


def list_repositories_in_domain(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListRepositoriesInDomain, sorted by name."""
    domain = store.domain(params["domain"], params.get("domainOwner"))
    admin = params.get("administratorAccount")
    prefix = params.get("repositoryPrefix", "")
    items = [
        repository
        for repository in domain.repositories.values()
        if repository.name.startswith(prefix) and admin in (None, store.account_id)
    ]
    page, token = _paginate("ListRepositoriesInDomain", items, lambda r: (r.name,), params)
    return {
        "repositories": [_repository_summary(store, domain.name, r) for r in page],
        "nextToken": token,
    }


# ---- packages ----------------------------------------------------------------------------------


def list_packages(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListPackages; ``namespace`` and ``packagePrefix`` are prefix filters, as in AWS."""
    repository = store.repository(params["domain"], params["repository"], params.get("domainOwner"))
    package_format = params.get("format")
    namespace = params.get("namespace")
    if package_format in NAMESPACE_FORBIDDEN and namespace is not None:
        check_namespace(package_format, namespace)
    prefix = params.get("packagePrefix", "")
    items = [
        package
        for package in repository.packages.values()
        if package_format in (None, package.format)
        and (namespace is None or (package.namespace or "").startswith(namespace))
        and package.name.startswith(prefix)
        and params.get("publish") in (None, package.publish)
        and params.get("upstream") in (None, package.upstream)
    ]
    page, token = _paginate(
        "ListPackages", items, lambda p: (p.format, p.namespace or "", p.name), params, 100
    )
    return {
        "packages": [
            {
                "format": package.format,
                "namespace": package.namespace,
                "package": package.name,
                "originConfiguration": _origin_configuration(package),
            }
            for package in page
        ],
        "nextToken": token,
    }


def describe_package(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """DescribePackage."""
    package = store.package(package_ref(params))
    return {
        "package": {
            "format": package.format,
            "namespace": package.namespace,
            "name": package.name,
            "originConfiguration": _origin_configuration(package),
        }
    }


def _by_version(record: PackageVersion) -> _Key:
    return (_natural(record.version), record.version)


def _by_published_time(record: PackageVersion) -> _Key:
    return (-record.published_time.timestamp(), _natural(record.version), record.version)


def list_package_versions(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListPackageVersions: every status (Archived and Disposed included) unless ``status``
    filters; sorted by version, or by published time (newest first) with
    ``sortBy=PUBLISHED_TIME``. The default display version is the most recently published
    version whose status is Published (none when no version is)."""
    ref = package_ref(params)
    package = store.package(ref)
    status = params.get("status")
    origin_type = params.get("originType")
    items = [
        record
        for record in package.versions.values()
        if status in (None, record.status) and origin_type in (None, "INTERNAL")
    ]
    key = _by_published_time if params.get("sortBy") == "PUBLISHED_TIME" else _by_version
    page, token = _paginate("ListPackageVersions", items, key, params)
    published = [r for r in package.versions.values() if r.status == "Published"]
    default = max(published, key=lambda r: (r.published_time, _natural(r.version)), default=None)
    return {
        "defaultDisplayVersion": None if default is None else default.version,
        "format": package.format,
        "namespace": package.namespace,
        "package": package.name,
        "versions": [
            {
                "version": record.version,
                "revision": record.revision,
                "status": record.status,
                "origin": _origin(ref.repository),
            }
            for record in page
        ],
        "nextToken": token,
    }


def describe_package_version(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """DescribePackageVersion (Archived, Unlisted and Disposed versions are described; deleted
    ones are gone)."""
    ref = package_ref(params)
    package = store.package(ref)
    record = store.version(ref, params["packageVersion"])
    return {
        "packageVersion": {
            "format": package.format,
            "namespace": package.namespace,
            "packageName": package.name,
            "displayName": package.display_name,
            "version": record.version,
            "publishedTime": record.published_time,
            "licenses": [],
            "revision": record.revision,
            "status": record.status,
            "origin": _origin(ref.repository),
        }
    }


def publish_package_version(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """PublishPackageVersion (generic packages only, as in AWS)."""
    ref = package_ref(params)
    record, asset = store.publish(
        ref,
        params["packageVersion"],
        asset_name=params["assetName"],
        content=params["assetContent"],
        sha256=params["assetSHA256"],
        unfinished=bool(params.get("unfinished", False)),
    )
    return {
        "format": ref.format,
        "namespace": ref.namespace,
        "package": ref.package,
        "version": record.version,
        "versionRevision": record.revision,
        "status": record.status,
        "asset": {"name": asset.name, "size": asset.size, "hashes": dict(asset.hashes)},
    }


def delete_package_versions(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeletePackageVersions."""
    result = store.delete_versions(
        package_ref(params), params["versions"], expected_status=params.get("expectedStatus")
    )
    return _batch_output(result)


def update_package_versions_status(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """UpdatePackageVersionsStatus."""
    result = store.update_versions_status(
        package_ref(params),
        params["versions"],
        target_status=params["targetStatus"],
        expected_status=params.get("expectedStatus"),
        version_revisions=params.get("versionRevisions"),
    )
    return _batch_output(result)


def dispose_package_versions(store: Store, params: Mapping[str, Any]) -> dict[str, Any]:
    """DisposePackageVersions."""
    result = store.dispose_versions(
        package_ref(params),
        params["versions"],
        expected_status=params.get("expectedStatus"),
        version_revisions=params.get("versionRevisions"),
    )
    return _batch_output(result)


OPERATIONS: dict[str, Handler] = {
    "CreateDomain": create_domain,
    "DescribeDomain": describe_domain,
    "ListDomains": list_domains,
    "CreateRepository": create_repository,
    "DescribeRepository": describe_repository,
    "ListRepositories": list_repositories,
    "ListRepositoriesInDomain": list_repositories_in_domain,
    "ListPackages": list_packages,
    "DescribePackage": describe_package,
    "ListPackageVersions": list_package_versions,
    "DescribePackageVersion": describe_package_version,
    "PublishPackageVersion": publish_package_version,
    "DeletePackageVersions": delete_package_versions,
    "UpdatePackageVersionsStatus": update_package_versions_status,
    "DisposePackageVersions": dispose_package_versions,
}
