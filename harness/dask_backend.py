"""Campaign tasks on a Dask distributed cluster (the optional ``dask`` extra).

The same :class:`~pagerace.harness.campaign.Task` s as the local pool, submitted to a
``distributed.Client``; workers run :func:`~pagerace.harness.campaign.run_task` and send
back rows and artifact documents, and this process (the only writer) commits them.
Workers need pagerace installed (the same version: rows record it).

Nothing here is imported by ``import pagerace``; ``distributed`` is imported only when a
backend is made.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..core.machine.errors import InvalidOption
from .campaign import BackendStalled, Task, UnitResult, run_task

INSTALL_HINT = "install the extra: pip install 'pagerace[dask]'"
#: How long a campaign waits with no running Dask worker (none connected, all lost, all
#: paused for memory) before it stops and says so (issue 10 item 9: it waited forever).
WORKER_TIMEOUT_S = 30.0


def have_distributed() -> bool:
    """Whether ``distributed`` can be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


class DaskBackend:
    """Submit campaign tasks to the Dask scheduler at ``address`` (``tcp://HOST:PORT``),
    or to an existing ``client``.

    Raises:
        InvalidOption: ``distributed`` is not installed, or the scheduler cannot be
            reached (the message names the address).
    """

    def __init__(
        self,
        address: str | None = None,
        client: Any = None,
        timeout: float = 10.0,
        worker_timeout: float = WORKER_TIMEOUT_S,
    ) -> None:
        try:
            import distributed
        except ImportError:
            raise InvalidOption(
                f"--cluster {address}: the Dask backend needs 'distributed'; {INSTALL_HINT}"
            ) from None
        self._distributed = distributed
        self._own = client is None
        if client is None:
            if not address or "://" not in address:
                raise InvalidOption(
                    f"--cluster {address!r}: expected a scheduler address like tcp://HOST:8786"
                )
            try:
                client = distributed.Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as e:
                raise InvalidOption(f"--cluster {address}: cannot reach the Dask scheduler ({e})") from None
        self.client = client
        self.address = address or getattr(getattr(client, "scheduler", None), "address", "") or "the cluster"
        self.worker_timeout = worker_timeout
        self._idle_since: float | None = None
        info = client.scheduler_info()
        workers = info.get("workers", {})
        self.jobs = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    def submit(self, t: Task) -> Any:
        # pure=False: the same task submitted twice (a rerun) runs again
        return self.client.submit(run_task, t, pure=False)

    def cancel(self, f: Any) -> bool:
        if f.status != "pending":
            return False
        f.cancel()
        return True

    def wait(self, futures: Sequence[Any], timeout: float) -> list[Any]:
        try:
            # distributed.wait() would look for a default client; use ours
            done, _ = self.client.sync(
                self._distributed.client._wait, list(futures), timeout=timeout, return_when="FIRST_COMPLETED"
            )
        except (TimeoutError, self._distributed.TimeoutError):
            return []
        return [f for f in futures if f in done]

    def result(self, f: Any) -> list[UnitResult]:
        """The future's result. A future reported done can need recomputing when the
        worker holding its result is lost: wait for it, but not forever.

        Raises:
            BackendStalled: no worker could run it for ``worker_timeout`` seconds.
        """
        while True:
            try:
                return f.result(timeout=1.0)
            except (TimeoutError, self._distributed.TimeoutError):
                why = self.stalled()
                if why is not None:
                    raise BackendStalled(why) from None

    def stalled(self) -> str | None:
        """Why nothing can run, once that has lasted ``worker_timeout`` seconds: no worker
        connected (none ever did, or the last one was lost), every worker paused (memory),
        or the scheduler gone. None while some worker runs (or not for long enough yet)."""
        try:
            workers = self.client.scheduler_info().get("workers", {})
        except Exception as exc:  # the scheduler is gone: the comm raises its own errors
            return f"--cluster {self.address}: lost the Dask scheduler ({type(exc).__name__}: {exc})"
        running = [w for w in workers.values() if w.get("status", "running") == "running"]
        now = time.monotonic()
        if running:
            self._idle_since = None
            return None
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < self.worker_timeout:
            return None
        if workers:
            what = f"all {len(workers)} Dask worker(s) are paused (out of memory)"
        else:
            what = "no Dask worker is connected (none connected, or all were lost)"
        return f"--cluster {self.address}: {what} for {now - self._idle_since:.0f} s"

    def close(self, cancel: bool) -> None:
        if self._own:
            self.client.close()
