"""HTTP from inside a network namespace: requests run on worker threads that joined the
namespace with setns(2), so the harness reaches node addresses that exist nowhere else while
the rest of the process stays where it was. Stdlib only; imports no budgetd module.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from jepsen_lite._run import SandboxError

__all__ = ["NamespaceHttp", "Response", "enter_namespace"]

#: Worker threads (and so requests in flight at once) per namespace.
WORKERS_MAX: Final = 16
#: Redirects followed by one request with ``follow``.
REDIRECTS_MAX: Final = 5
_CLONE_NEWNET: Final = 0x40000000
T = TypeVar("T")


@dataclass(frozen=True)
class Response:
    """One request's outcome: ``status`` is None when no HTTP answer came (``error`` says
    why: refused, reset, timed out); ``elapsed_s`` is wall time for the whole exchange."""

    status: int | None
    body: Any
    headers: dict[str, str]
    elapsed_s: float
    error: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _namespace_inode(namespace: str) -> int:
    return os.stat(f"/run/netns/{namespace}").st_ino


def _thread_namespace_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def enter_namespace(namespace: str) -> None:
    """Move the calling thread (only it) into network namespace ``namespace``; threads it
    starts afterwards are born there too. SandboxError if setns(2) fails or did not take."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise SandboxError(f"setns {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)
    if _thread_namespace_inode() != _namespace_inode(namespace):
        raise SandboxError(f"thread is not in namespace {namespace} after setns")


class NamespaceHttp:
    """Requests sent from inside ``namespace`` with ``Authorization: Bearer <token>``.

    Never uses an HTTP proxy from the environment. Close it (or use it as a context manager)
    to end its threads."""

    def __init__(self, namespace: str, token: str, *, workers: int = 4) -> None:
        if not 0 < workers <= WORKERS_MAX:
            raise ValueError(f"workers must be in 1..{WORKERS_MAX}, got {workers}")
        self.namespace = namespace
        self.token = token
        self._inode = _namespace_inode(namespace)
        self._local = threading.local()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"http-{namespace}", initializer=self._enter
        )

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                self._local.error = f"setns {self.namespace}: {os.strerror(errno)}"
                return
        finally:
            os.close(fd)
        self._local.error = None

    def _check(self) -> None:
        error = getattr(self._local, "error", "worker did not enter the namespace")
        if error is None and _thread_namespace_inode() != self._inode:
            error = f"worker thread is not in namespace {self.namespace}"
        if error is not None:
            # Never let a request leave from the wrong namespace.
            raise SandboxError(error)

    def request(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        follow: bool = False,
        timeout_s: float = 10.0,
    ) -> Response:
        """One request (JSON body if ``body`` is not None). With ``follow``, 307/308 redirects
        are followed with the same method and body, as ``curl -L`` does."""
        return self.submit(
            url, method, body, headers=headers, follow=follow, timeout_s=timeout_s
        ).result()

    def submit(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        follow: bool = False,
        timeout_s: float = 10.0,
    ) -> Future[Response]:
        """``request`` without waiting: its Response, later."""
        return self._pool.submit(self._request, url, method, body, headers, follow, timeout_s)

    def submit_call(self, call: Callable[[], T]) -> Future[T]:
        """Run ``call`` on one of the namespace's worker threads (it may use
        ``request_here``); its result, later."""

        def checked() -> T:
            self._check()
            return call()

        return self._pool.submit(checked)

    def request_here(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> Response:
        """``request`` on the calling thread, which must be one of this object's workers
        (inside ``submit_call``); raises SandboxError otherwise."""
        return self._request(url, method, body, headers, False, timeout_s)

    def _request(
        self,
        url: str,
        method: str,
        body: Any,
        headers: dict[str, str] | None,
        follow: bool,
        timeout_s: float,
    ) -> Response:
        self._check()
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        started = time.monotonic()
        response = Response(None, None, {}, 0.0, "no request sent")
        for _ in range(REDIRECTS_MAX + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
            try:
                with self._opener.open(request, timeout=timeout_s) as answer:
                    status, raw, got = answer.status, answer.read(), dict(answer.headers)
            except urllib.error.HTTPError as error:
                status, raw, got = error.code, error.read(), dict(error.headers)
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                return Response(None, None, {}, time.monotonic() - started, str(reason))
            response = Response(status, _decode(raw), got, time.monotonic() - started)
            if not (follow and status in (307, 308) and "Location" in got):
                return response
            url = got["Location"]
        return response

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> NamespaceHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
