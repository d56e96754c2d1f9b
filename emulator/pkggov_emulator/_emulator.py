"""The public ``Emulator``: a CodeArtifact HTTP server on a background thread, plus test hooks."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from ._calls import RecordedCall
from ._constants import DEMO_ACCESS_KEY_ID, DEMO_ACCOUNT_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY
from ._control import CONTROL_PREFIX, handle_control
from ._faults import FaultRule
from ._http import EmulatorHTTPServer
from ._model import service_model, warm_up_patterns
from ._seed import Seed
from ._service import Service
from ._state import PackageRef
from ._wire import Request, Response

__all__ = ["Emulator"]


class Emulator:
    """An emulated AWS CodeArtifact account served over HTTP.

    ``seed`` is seed data (see ``pkggov_emulator._seed``; ``load_demo_seed()`` for the demo) or
    None for an empty account. ``credentials`` maps access key ids to secret keys (default: the
    demo key). ``region`` is the only region accepted in SigV4 credential scopes and the one in
    ARNs; None accepts any region (ARNs then say ``us-east-1``). ``fault_seed`` seeds the RNG of
    rate-based faults. ``log_requests`` logs one line per request on the ``pkggov_emulator``
    logger. Usable as a context manager (starts on enter, stops on exit).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: Seed | None = None,
        credentials: Mapping[str, str] | None = None,
        account_id: str = DEMO_ACCOUNT_ID,
        region: str | None = DEMO_REGION,
        fault_seed: int = 0,
        log_requests: bool = False,
    ) -> None:
        # Pay the one-off costs now, not during the first requests: botocore's model (~0.4 s)
        # and the Unicode-class patterns (~0.3 s); both are cached for the whole process.
        service_model()
        warm_up_patterns()
        self._host = host
        self._port = port
        self._log_requests = log_requests
        self._service = Service(
            seed=seed,
            credentials=(
                {DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY} if credentials is None else credentials
            ),
            account_id=account_id,
            region=region,
            arn_region=region or DEMO_REGION,
            fault_seed=fault_seed,
            log_requests=log_requests,
        )
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving on a background thread; return once the socket is listening.

        After ``stop`` it may be started again, on the same port. Raises RuntimeError if it is
        already running and OSError if the address cannot be bound.
        """
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the emulator is already running")
            self._service.reopen()
            server = EmulatorHTTPServer(
                (self._host, self._port), self._app, log_requests=self._log_requests
            )
            self._port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"pkggov-emulator:{self._port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop serving and close every open connection (idempotent)."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None or thread is None:
                return
            self._service.close()
            server.shutdown()
            server.server_close()
            server.close_connections()
            thread.join()

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._server is not None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """The host the emulator listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known after ``start`` when constructed with port 0)."""
        return self._port

    @property
    def endpoint_url(self) -> str:
        """The URL to give boto3 (``endpoint_url=``) or the AWS CLI (``--endpoint-url``)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def account_id(self) -> str:
        """The account that owns every domain."""
        return self._service.account_id

    # ---- test hooks --------------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> None:
        """Add a fault rule (evaluated in order of addition); ValueError for unknown operations."""
        self._service.add_fault(rule)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self._service.faults.clear()

    def faults(self) -> list[FaultRule]:
        """Return the rules that can still fire."""
        return self._service.faults.rules()

    def calls(self, operation: str | None = None) -> list[RecordedCall]:
        """Return the recorded calls (of ``operation`` only, if given) in the order answered."""
        return self._service.calls.calls(operation)

    def clear_calls(self) -> None:
        """Forget the recorded calls."""
        self._service.calls.clear()

    def version_status(  # noqa: PLR0917 - positional coordinates are the agreed API.
        self,
        domain: str,
        repository: str,
        format: str,
        namespace: str | None,
        package: str,
        version: str,
    ) -> str | None:
        """Return a version's status, or None if it or anything above it does not exist."""
        ref = PackageRef(
            domain=domain,
            repository=repository,
            format=format,
            namespace=namespace,
            package=package,
        )
        return self._service.store.version_status(ref, version)

    def put_version(  # noqa: PLR0917 - same coordinates as version_status.
        self,
        domain: str,
        repository: str,
        format: str,
        namespace: str | None,
        package: str,
        version: str,
        *,
        status: str = "Published",
        published_time: dt.datetime | None = None,
    ) -> str:
        """Create or replace a version of any format directly in the state; return its revision.

        For test set-up only (AWS can publish only generic packages through its API). Raises the
        emulator's ResourceNotFoundError if the domain or repository does not exist,
        ValidationError if the namespace breaks the format's rule, ValueError for a bad status.
        """
        ref = PackageRef(
            domain=domain,
            repository=repository,
            format=format,
            namespace=namespace,
            package=package,
        )
        return self._service.store.put_version(
            ref, version, status=status, published_time=published_time
        ).revision

    def reset(self) -> None:
        """Return to the seed: fresh state, no fault rules, empty call log."""
        self._service.reset()

    # ---- HTTP entry point ------------------------------------------------------------------------

    def _app(self, request: Request) -> Response:
        if request.path.startswith(CONTROL_PREFIX):
            return handle_control(self._service, request)
        return self._service.handle(request)
