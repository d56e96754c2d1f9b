"""A cleanup plan is read page by page: packages in order, a package too large for one page
split between pages and continued from its version offset, every version exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from pkggov.v1 import package_governance_pb2 as pb
from pkggov.v1 import package_governance_pb2_grpc as pb_grpc
from pkggov_emulator import Emulator, load_demo_seed
from pkggov_gateway.api import cleanup as cleanup_api
from tests.e2e.harness import cleanup_stub_for, gateway_settings, running_gateway, wait_for


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[pb_grpc.CleanupServiceStub]:
    """A CleanupService stub as alice, on a gateway whose plan pages hold about 400 bytes."""
    monkeypatch.setattr(cleanup_api, "MAX_PAGE_BYTES", 400)
    with (
        Emulator(seed=load_demo_seed()) as emulator,
        running_gateway(gateway_settings(emulator.endpoint_url, policy={})) as gateway,
        cleanup_stub_for(gateway, "alice") as cleanup,
    ):
        yield cleanup


def _read_all(
    stub: pb_grpc.CleanupServiceStub, first: pb.PlanCleanupResponse
) -> tuple[dict[str, list[str]], int, list[int]]:
    """Every package's versions across all pages (a continuation must start where its package
    stopped), how many pages it took, and each part's version_offset."""
    parts = list(first.packages)
    token = first.next_page_token
    pages = 1
    while token:
        page = stub.GetCleanupPlan(
            pb.GetCleanupPlanRequest(plan_id=first.plan.plan_id, page_token=token), timeout=30
        )
        assert page.ByteSize() < 2048  # the budget, a package's header and one version
        parts.extend(page.packages)
        token = page.next_page_token
        pages += 1
    whole: dict[str, list[str]] = {}
    for part in parts:
        versions = whole.setdefault(f"{part.namespace}/{part.package}", [])
        assert part.version_offset == len(versions)
        versions.extend(v.version for v in part.versions)
    return whole, pages, [part.version_offset for part in parts]


def test_every_version_of_every_package_once_across_small_pages(
    stub: pb_grpc.CleanupServiceStub,
) -> None:
    """Paging a repository's plan through ~400-byte pages yields each package's versions in
    plan order, each once, a split package's parts continuing from their offsets; one
    package's own plan lists its versions in the same order."""
    rule = pb.CleanupRule(keep_newest=1)
    plan = stub.PlanCleanup(
        pb.PlanCleanupRequest(domain="demo", repository="dev-shared", rule=rule), timeout=30
    )
    whole, pages, offsets = _read_all(stub, plan)
    assert plan.plan.package_count == len(whole)
    assert plan.plan.version_count == sum(len(v) for v in whole.values())
    assert pages > plan.plan.package_count  # the pages were small: it took many
    assert any(offsets)  # and a package was split
    single = stub.PlanCleanup(
        pb.PlanCleanupRequest(
            domain="demo",
            repository="dev-shared",
            format=pb.PACKAGE_FORMAT_PYPI,
            package="requests-lite",
            rule=rule,
        ),
        timeout=30,
    )
    alone, _, _ = _read_all(stub, single)
    assert whole["/requests-lite"] == alone["/requests-lite"]
    assert 5 == len(alone["/requests-lite"])


def test_a_token_of_another_plan_is_refused(stub: pb_grpc.CleanupServiceStub) -> None:
    """A page token is bound to its plan: another plan's token is INVALID_ARGUMENT."""
    request = pb.PlanCleanupRequest(
        domain="demo", repository="dev-shared", rule=pb.CleanupRule(keep_newest=1)
    )
    first = stub.PlanCleanup(request, timeout=30)
    second = stub.PlanCleanup(request, timeout=30)
    assert first.next_page_token
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetCleanupPlan(
            pb.GetCleanupPlanRequest(plan_id=second.plan.plan_id, page_token=first.next_page_token),
            timeout=30,
        )
    assert grpc.StatusCode.INVALID_ARGUMENT == raised.value.code()


def test_a_jobs_results_page_through_small_pages_each_version_once(
    stub: pb_grpc.CleanupServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's results, read through ~80-byte pages of one package, give every planned
    deletion's result once, a split package continuing from its offset."""
    plan = stub.PlanCleanup(
        pb.PlanCleanupRequest(
            domain="demo", repository="dev-shared", rule=pb.CleanupRule(keep_newest=1)
        ),
        timeout=30,
    )
    job = stub.ApplyCleanup(pb.ApplyCleanupRequest(plan_id=plan.plan.plan_id), timeout=30).job

    def read(token: str = "") -> pb.GetCleanupJobResponse:
        return stub.GetCleanupJob(
            pb.GetCleanupJobRequest(
                job_id=job.job_id, include_results=True, page_size=1, page_token=token
            ),
            timeout=30,
        )

    assert wait_for(lambda: read().job.state == pb.CLEANUP_JOB_STATE_SUCCEEDED, timeout=20)
    monkeypatch.setattr(cleanup_api, "MAX_PAGE_BYTES", 80)
    results: dict[str, list[tuple[str, int]]] = {}
    offsets = []
    page = read()
    while True:
        for part in page.results:
            versions = results.setdefault(f"{part.namespace}/{part.package}", [])
            assert part.version_offset == len(versions)
            offsets.append(part.version_offset)
            versions.extend((v.version, v.result) for v in part.versions)
        if not page.next_page_token:
            break
        page = read(page.next_page_token)
    assert plan.plan.package_count == len(results)
    deleted = [(p, v) for p, versions in results.items() for v, _ in versions]
    assert plan.plan.delete_count == len(deleted) == len(set(deleted))
    assert {pb.CLEANUP_RESULT_DELETED} == {r for vs in results.values() for _, r in vs}
    assert any(offsets)  # a package's results were split
