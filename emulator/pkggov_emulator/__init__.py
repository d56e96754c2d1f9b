"""pkggov_emulator: an AWS CodeArtifact emulator that unmodified boto3 and the AWS CLI can call.

It speaks CodeArtifact's REST-JSON protocol (from botocore's model), verifies SigV4, keeps an
in-memory account seeded from JSON, injects faults for tests and records every call::

    from pkggov_emulator import Emulator, FaultRule, load_demo_seed

    with Emulator(seed=load_demo_seed()) as emu:
        emu.add_fault(FaultRule(operation="DeletePackageVersions", kind="throttle", count=2))
        ...  # point boto3 at emu.endpoint_url with the DEMO_* credentials
"""

from __future__ import annotations

from ._calls import RecordedCall
from ._constants import DEMO_ACCESS_KEY_ID, DEMO_ACCOUNT_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY
from ._emulator import Emulator
from ._faults import FAULT_KINDS, FaultKind, FaultRule
from ._seed import Seed, SeedError, load_demo_seed, load_seed_file

__all__ = [
    "DEMO_ACCESS_KEY_ID",
    "DEMO_ACCOUNT_ID",
    "DEMO_REGION",
    "DEMO_SECRET_ACCESS_KEY",
    "FAULT_KINDS",
    "Emulator",
    "FaultKind",
    "FaultRule",
    "RecordedCall",
    "Seed",
    "SeedError",
    "load_demo_seed",
    "load_seed_file",
]
