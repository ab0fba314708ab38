"""The simulated cluster's objects on disk: a snapshot and a journal of the changes made since.

Every apply used to write the whole state to a temporary file, fsync it, rename it over ``sim-state.json`` and
fsync the directory: two journal commits of the filesystem and a rename per command, most of a benchmark
agent's CPU per command (0.57 ms CPU of 0.9 measured in process). Now a change is one line appended to
``sim-journal.jsonl`` and made durable with one ``fdatasync`` (0.08 ms); every ``JOURNAL_LIMIT`` lines the
state is written whole to ``sim-state.json`` as before (atomically, durably) and the journal emptied.

Crash safety is the same as before: a change is made current only once its line is durable, so a ``kill -9``
leaves either the old cluster or the new one. Each line carries a sequence number and the snapshot the last
one it holds, so a crash between writing a snapshot and emptying the journal replays nothing twice; a line
cut short by a crash can only be the last one, and it is dropped (its apply never returned, so its command
is delivered again and applied then). A damaged line anywhere else is refused, like a damaged snapshot.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from agent.statefiles import FILE_MODE, ensure_dir, fsync_dir, write_bytes_atomic
from schemas.messages import DesiredState, Member, Quota, Resources, WorkloadKind

OBJECTS_FILE = "sim-state.json"
"""The simulated cluster's tenant clusters and spaces, tombstones, apply log and counters (a snapshot)."""
JOURNAL_FILE = "sim-journal.jsonl"
"""The changes since the snapshot, one JSON object a line (``Change``)."""
STATE_FORMAT = 2
"""Format 2 has a journal beside the snapshot; format 1 (a snapshot alone) is read too."""
READABLE_FORMATS = (1, 2)
LOG_LIMIT = 10_000
"""Entries kept in the apply log; older ones are dropped (counted in ``log_dropped``)."""
JOURNAL_LIMIT = 256
"""Lines in the journal before the state is written whole and the journal emptied."""


class SimObject(msgspec.Struct, frozen=True, kw_only=True):
    """One tenant cluster or space on the simulated cluster."""

    kind: WorkloadKind
    project: str
    name: str
    generation: int
    state: DesiredState
    """``running`` or ``sleeping`` (a deleted object is removed)."""
    version: str = ""
    members: tuple[Member, ...] = ()
    resources: Resources = msgspec.field(default_factory=Resources)
    quota: Quota = msgspec.field(default_factory=Quota)
    op_id: str = ""
    """The operation that produced ``generation``."""
    created_at: float = 0.0
    updated_at: float = 0.0
    last_activity: float = 0.0


class Tombstone(msgspec.Struct, frozen=True, kw_only=True):
    """The last generation of a deleted object."""

    kind: WorkloadKind
    project: str
    name: str
    generation: int
    op_id: str = ""
    at: float = 0.0


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One generation applied (only real applies are logged, never skips or failures)."""

    op_id: str
    kind: WorkloadKind
    project: str
    name: str
    generation: int
    state: DesiredState
    version: str = ""
    at: float = 0.0


class Counters(msgspec.Struct, frozen=True, kw_only=True):
    applied: int = 0
    """Generations applied."""
    skipped: int = 0
    """Commands not applied because the object was already at that generation or later."""
    failed: int = 0
    """Applies that failed (``TETHER_SIM_FAIL``)."""


class SimState(msgspec.Struct, frozen=True, kw_only=True):
    """The whole simulated cluster (the snapshot with the journal's changes)."""

    format: int = STATE_FORMAT
    objects: dict[str, SimObject] = msgspec.field(default_factory=dict)
    """Keyed ``<kind>/<project>/<name>``."""
    tombstones: dict[str, Tombstone] = msgspec.field(default_factory=dict)
    """Keyed like ``objects``."""
    log: list[LogEntry] = msgspec.field(default_factory=list)
    """Append-only, oldest first; at most LOG_LIMIT entries."""
    log_dropped: int = 0
    """Entries dropped from the front of ``log``."""
    counters: Counters = msgspec.field(default_factory=Counters)
    journal_seq: int = 0
    """The last journal line this state holds."""


class Change(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of the journal: what one apply, skip, failure or touch changed (values after it, so replaying
    a line twice changes nothing more)."""

    seq: int
    key: str = ""
    put: SimObject | None = None
    """``key`` exists as this object now (its tombstone, if any, is gone)."""
    tombstone: Tombstone | None = None
    """``key`` was deleted (the object is gone, this tombstone stays)."""
    entry: LogEntry | None = None
    """Appended to the apply log."""
    counters: Counters = msgspec.field(default_factory=Counters)


def changed(old: SimState, change: Change) -> SimState:
    """``old`` with ``change`` made (pure)."""
    objects, tombstones = old.objects, old.tombstones
    if change.put is not None:
        objects = {**objects, change.key: change.put}
        if change.key in tombstones:
            tombstones = {k: v for k, v in tombstones.items() if k != change.key}
    elif change.tombstone is not None:
        objects = {k: v for k, v in objects.items() if k != change.key}
        tombstones = {**tombstones, change.key: change.tombstone}
    log, dropped = old.log, old.log_dropped
    if change.entry is not None:
        log = [*log, change.entry]
        over = max(0, len(log) - LOG_LIMIT)
        log, dropped = log[over:], dropped + over
    return SimState(
        objects=objects,
        tombstones=tombstones,
        log=log,
        log_dropped=dropped,
        counters=change.counters,
        journal_seq=change.seq,
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Change)


def _snapshot(path: Path) -> SimState:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return SimState()
    try:
        state = msgspec.json.decode(text, type=SimState)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path} is damaged: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if state.format not in READABLE_FORMATS:
        raise ValueError(f"{path} has format {state.format}; this agent reads format {STATE_FORMAT}")
    return state


def _replayed(state: SimState, path: Path) -> tuple[SimState, int, int]:
    """``state`` with the journal's lines after it; (state, whole lines, their bytes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state, 0, 0
    # The last piece has no newline: empty, or a line cut short by a crash (its apply never returned).
    lines = data.split(b"\n")[:-1]
    good = whole = 0
    for i, line in enumerate(lines):
        try:
            change = _decoder.decode(line)
        except msgspec.MsgspecError as exc:
            if i == len(lines) - 1:
                break  # the last write, not made durable whole
            raise ValueError(f"{path} is damaged at line {i + 1}: {exc}") from None
        good += len(line) + 1
        whole += 1
        if change.seq > state.journal_seq:
            if change.seq != state.journal_seq + 1:
                raise JournalGap(f"{path} skips from line {state.journal_seq} to {change.seq} of the journal")
            state = changed(state, change)
    return state, whole, good


class JournalGap(ValueError):
    """The journal does not follow on from the snapshot: damage, or (for a reader beside a running agent) the
    snapshot read before a compaction and the journal after it."""


def load(state_dir: Path, attempts: int = 3) -> SimState:
    """The simulated cluster as its files say (ValueError naming the damage, OSError when unreadable); read
    again when it caught the agent folding its journal into the snapshot."""
    snapshot, journal = state_dir / OBJECTS_FILE, state_dir / JOURNAL_FILE
    for _ in range(attempts - 1):
        with contextlib.suppress(JournalGap):
            return _replayed(_snapshot(snapshot), journal)[0]
    return _replayed(_snapshot(snapshot), journal)[0]


class Store:
    """Keeps ``SimState`` durable in ``state_dir``: ``save`` a change, and every JOURNAL_LIMIT changes the whole."""

    def __init__(self, state_dir: Path) -> None:
        self.snapshot_path = state_dir / OBJECTS_FILE
        self.journal_path = state_dir / JOURNAL_FILE
        self._fd: int | None = None
        self._lines = 0
        self._size = 0
        self._whole = True
        """False after a journal write failed: the next save writes the whole state."""

    def open(self) -> SimState:
        """The state on disk; a line cut short by a crash is cut off the journal."""
        state, self._lines, self._size = _replayed(_snapshot(self.snapshot_path), self.journal_path)
        with contextlib.suppress(FileNotFoundError):
            if self.journal_path.stat().st_size > self._size:
                os.truncate(self.journal_path, self._size)
        return state

    def save(self, state: SimState, change: Change) -> None:
        """Make ``state`` (``change`` made) durable: one journal line, or the whole state (OSError when neither
        could be written; the state on disk is then the one before)."""
        if not self._whole or self._lines >= JOURNAL_LIMIT:
            self.save_whole(state)
            return
        line = _encoder.encode(change) + b"\n"
        fd = self._journal()
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.journal_path} ({written} of {len(line)} bytes)")
            os.fdatasync(fd)
        except OSError:
            self._whole = False  # what is in the journal now is unknown: the next save replaces it
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._lines += 1
        self._size += len(line)

    def save_whole(self, state: SimState) -> None:
        """Write ``state`` as the snapshot (atomically, durably), then empty the journal."""
        # msgspec's encoder and formatter (C), not json.dumps with an indent (pure Python).
        payload = msgspec.json.format(msgspec.json.encode(state, order="sorted"), indent=2) + b"\n"
        write_bytes_atomic(self.snapshot_path, payload)
        if self._lines or self._size or not self._whole:
            fd = self._journal()
            os.ftruncate(fd, 0)
            os.fsync(fd)
        self._lines = self._size = 0
        self._whole = True

    def _journal(self) -> int:
        if self._fd is None:
            created = not self.journal_path.exists()
            ensure_dir(self.journal_path.parent)
            self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            if created:
                fsync_dir(self.journal_path.parent)
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
