"""Where an agent's time goes while it comes online: each step of the connect path, timed in the worker.

The steps are the agent's own functions, wrapped (in the benchmark's worker processes only) by a timer
that records how long each call took; nothing else about them changes. Wall-clock time: a step waiting on
the platform (the registry's answer, JetStream's) counts its wait, a step burning CPU counts that, and with
hundreds of agents per process both include waiting for this process's event loop.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

STEPS: dict[str, list[float]] = {}
"""step -> durations (seconds) of every call in this process."""


def _timed_sync(step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            STEPS.setdefault(step, []).append(time.perf_counter() - t0)

    return timed


def _timed_async(step: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            STEPS.setdefault(step, []).append(time.perf_counter() - t0)

    return timed


def _attempts(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Each attempt of a hello or a bootstrap, timed under what it got: answered, no responders (nobody
    subscribed yet), overloaded (told to come back), or another failure (a timeout)."""
    from schemas.errors import NoResponders, Overloaded

    @functools.wraps(fn)
    async def timed(conn: Any, subject: str, *args: Any, **kwargs: Any) -> Any:
        what = "hello" if ".hello." in subject else "bootstrap" if ".bootstrap." in subject else "renewal"
        outcome = "answered"
        t0 = time.perf_counter()
        try:
            return await fn(conn, subject, *args, **kwargs)
        except NoResponders:
            outcome = "no responders"
            raise
        except Overloaded:
            outcome = "overloaded (told when to come back)"
            raise
        except Exception:
            outcome = "failed (timeout, link down, error)"
            raise
        finally:
            STEPS.setdefault(f"{what} attempt, {outcome}", []).append(time.perf_counter() - t0)

    return timed


def install() -> None:
    """Wrap the connect path's steps (call once per worker process, before any agent starts)."""
    from agent.bus import commands
    from agent.identity import bootstrap, calls, files, session

    bootstrap.new_user_seed = _timed_sync("key generation (nkey seed)", bootstrap.new_user_seed)  # type: ignore[attr-defined]
    bootstrap.call = _timed_async("token exchange (bootstrap request to the registry)", bootstrap.call)  # type: ignore[attr-defined]
    session.call = _timed_async("hello request to the registry", session.call)  # type: ignore[attr-defined]
    calls.request = _attempts(calls.request)  # type: ignore[attr-defined]
    session.connect = _timed_async("NATS connect + JWT auth (x2: bootstrap user, own user)", session.connect)  # type: ignore[attr-defined]
    files.IdentityFiles.save = _timed_sync("credential file (fsync)", files.IdentityFiles.save)  # type: ignore[method-assign]
    files.IdentityFiles.save_nats_user = _timed_sync(  # type: ignore[method-assign]
        "NATS creds file (fsync)", files.IdentityFiles.save_nats_user
    )
    commands.CommandQueue._bind = _timed_async(  # type: ignore[method-assign]
        "command consumer bind (+ look-up unless the hello named it)", commands.CommandQueue._bind
    )
    commands.CommandQueue._declare = _timed_async(  # type: ignore[method-assign]
        "command consumer look-up (JetStream API)", commands.CommandQueue._declare
    )


def summary(durations: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for step, values in durations.items():
        ordered = sorted(values)
        n = len(ordered)
        out[step] = {
            "calls": n,
            "total_s": sum(ordered),
            "p50": ordered[n // 2] if n else 0.0,
            "p99": ordered[min(n - 1, int(n * 0.99))] if n else 0.0,
            "max": ordered[-1] if n else 0.0,
        }
    return out


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds a process has used (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
