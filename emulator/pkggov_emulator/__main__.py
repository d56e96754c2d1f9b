"""Command line: ``pkggov-emulator --listen 127.0.0.1:50052 --seed demo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ._constants import DEMO_ACCESS_KEY_ID, DEMO_ACCOUNT_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY
from ._emulator import Emulator
from ._seed import Seed, SeedError, load_demo_seed, load_seed_file

__all__ = ["main"]

DEFAULT_LISTEN = "127.0.0.1:50052"


def _listen_address(value: str) -> tuple[str, int]:
    host, separator, port = value.rpartition(":")
    if not separator or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pkggov-emulator",
        description="Serve an emulated AWS CodeArtifact (REST-JSON, SigV4) for local use.",
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=_listen_address(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    parser.add_argument(
        "--seed",
        default="demo",
        metavar="PATH|demo|none",
        help="seed data: a JSON file, the bundled demo data (default) or none",
    )
    parser.add_argument("--account-id", default=DEMO_ACCOUNT_ID, help="owning account id")
    parser.add_argument("--region", default=DEMO_REGION, help="region accepted in signatures")
    parser.add_argument("--fault-seed", type=int, default=0, help="RNG seed for rate-based faults")
    parser.add_argument("--verbose", action="store_true", help="log one line per request")
    return parser


def _seed(value: str) -> Seed | None:
    if value == "demo":
        return load_demo_seed()
    if value == "none":
        return None
    return load_seed_file(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; return the exit status."""
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = args.listen
    try:
        emulator = Emulator(
            host,
            port,
            seed=_seed(args.seed),
            account_id=args.account_id,
            region=args.region,
            fault_seed=args.fault_seed,
            log_requests=args.verbose,
        )
        emulator.start()
    except (SeedError, OSError) as error:
        print(f"pkggov-emulator: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(
        f"pkggov-emulator: AWS CodeArtifact emulator listening on {emulator.endpoint_url}\n"
        f"  account:  {emulator.account_id}   seed: {args.seed}\n"
        f"  control:  {emulator.endpoint_url}/_emulator/ (unsigned)\n"
        f"  export AWS_ACCESS_KEY_ID={DEMO_ACCESS_KEY_ID}\n"
        f"  export AWS_SECRET_ACCESS_KEY={DEMO_SECRET_ACCESS_KEY}\n"
        f"  export AWS_DEFAULT_REGION={args.region}\n"
        f"  aws codeartifact list-packages --domain demo --repository dev-shared "
        f"--endpoint-url {emulator.endpoint_url}",
        flush=True,
    )
    while not stopping.wait(0.2):
        pass
    emulator.stop()
    print("pkggov-emulator: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
