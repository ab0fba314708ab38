"""Lifecycle: the service and ``run``.

Every change is one write of the desired state (KV ``desired_bucket(cluster)``, with a new generation and
operation id, compare-and-set, under ``<cluster>.<kind>.<project>.<name>``): the record is the command, and the
cluster's agent follows its cluster's records through its own durable consumer. The audit record is
published after; a crash between the two is repaired at start (every record not yet observed at its
generation has its audit record published again, and the stream drops the copies it already has).
Each agent asks lifecycle to record its results (``Lifecycle.AGENT_RESULT``, answered by any replica once the
record is durable); its inventories come on the EVT stream through a durable consumer shared by all replicas.

The parts, each its own module: ``workloads`` (the endpoints), ``sending`` (audit records and events),
``results``, ``resync`` (inventories), ``membership`` (RBAC fan-out), ``autosleep``, ``removal`` (a
removed cluster's deletions), over ``store`` (the desired state: its ``shards`` and the ``names``; the
``migration`` from earlier versions' one bucket) and ``peers`` (the other services).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Unpack

from schemas import subjects
from schemas.messages import (
    CommandResult,
    NameRequest,
    WorkloadAction,
    WorkloadCreate,
    WorkloadName,
    WorkloadQuery,
    WorkloadRef,
)
from services.bus import Bus, Consumer, Endpoints, Options, Records, Runtime, Telemetry, serve, until_done
from services.bus.admission import AdmissionLimits
from services.bus.settings import FromEnv, ServiceSettings, env
from services.lifecycle.autosleep import AutoSleep
from services.lifecycle.membership import MembershipFanout
from services.lifecycle.metrics import Metrics
from services.lifecycle.migration import move_retired
from services.lifecycle.peers import Peers
from services.lifecycle.removal import Removal
from services.lifecycle.results import Results
from services.lifecycle.resync import InventoryResync
from services.lifecycle.sending import Sender
from services.lifecycle.shards import Shards, open_shards
from services.lifecycle.store import Desired
from services.lifecycle.workloads import Workloads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings(FromEnv):
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    sleep_check_interval: float = env("TETHER_SLEEP_CHECK_INTERVAL", 15.0)
    """Seconds between checks for tenants idle past their ``sleep_after``."""

    empty_grace: float = env("TETHER_EMPTY_GRACE", 600.0)
    """Seconds a cluster's desired state must stay empty before its leftovers are deleted."""

    result_concurrency: int = env("TETHER_RESULT_CONCURRENCY", 32)
    """Agents' results recorded at once by one replica (each waits on KV and stream round trips; one at a
    time capped the fleet at about a hundred commands a second); beyond them a bounded queue."""

    result_queue: int = env("TETHER_RESULT_QUEUE", 2048)
    """Results waiting at most; more are told when to come back (retry-after), and their agents keep their
    commands meanwhile."""

    result_max_retry_after: float = env("TETHER_RESULT_MAX_RETRY_AFTER", 4.0)
    """Seconds at most a refused result is told to wait before it asks again. The appointments are spaced at
    the rate the endpoint has been serving, and that rate is learnt from the handling times of the requests
    that finish: after a stall of the server it stays low until the stalled ones are done, so a wave of results
    that came during it was told to come back up to 14.2 s later (a restart of 10,000 agents: the last pending
    result recorded 27 s after lifecycle answered, its endpoint idle meanwhile). A result asked again is cheap
    (refused again, or recorded), so its appointment stays short and the rate is asked again with it."""

    @property
    def result_admission(self) -> AdmissionLimits:
        # A queued result may wait 2 s at most: well under the agents' 5 s request timeout.
        return AdmissionLimits(
            self.result_concurrency, self.result_queue, max_wait=2.0, max_retry_after=self.result_max_retry_after
        )


class Lifecycle:
    """Wires lifecycle's parts over the desired-state buckets and the names' bucket."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        shards: Shards,
        names: Records[WorkloadName],
        telemetry: Telemetry | None = None,
    ) -> None:
        metrics = Metrics(telemetry or Telemetry.create("lifecycle"))
        self.desired = Desired(shards, names)
        sender = Sender(bus, metrics)
        peers = Peers(bus, settings.common.bus.request_timeout)
        self.workloads = Workloads(self.desired, sender, peers)
        self.results = Results(self.desired, sender, metrics)
        self.result_admission = settings.result_admission
        self.resync = InventoryResync(self.desired, sender, metrics, settings.empty_grace)
        self.membership = MembershipFanout(self.desired, sender, peers)
        self.removal = Removal(self.desired, sender)
        self.auto_sleep = AutoSleep(self.desired, self.workloads.action, metrics, settings.sleep_check_interval)

    def install(self, endpoints: Endpoints) -> None:
        L = subjects.Lifecycle
        endpoints.platform(L.CREATE, WorkloadCreate, self.workloads.create)
        endpoints.platform(L.GET, WorkloadRef, self.workloads.get)
        endpoints.platform(L.LIST, WorkloadQuery, self.workloads.list)
        endpoints.platform(L.ACTION, WorkloadAction, self.workloads.action)
        endpoints.platform(L.ACTION_OWN, WorkloadAction, self.workloads.action_own)
        endpoints.platform(L.FORGET_CLUSTER, NameRequest, self.removal.forget_cluster)
        endpoints.agent(L.AGENT_RESULT, CommandResult, self.results.record, admission=self.result_admission)

    def start(self, rt: Runtime) -> None:
        """The durable consumers of inventories and membership changes, and auto-sleep."""
        inventories = Consumer(
            stream=subjects.EVT_STREAM,
            durable=subjects.LIFECYCLE_INVENTORY_CONSUMER,
            filter_subject=subjects.evt_kind(subjects.EVT_INVENTORY),
            batch=8,
        )
        members = Consumer(
            stream=subjects.EVENTS_STREAM,
            durable=subjects.LIFECYCLE_MEMBERSHIP_CONSUMER,
            filter_subject=subjects.MEMBERSHIP_CHANGED,
        )
        rt.task("inventory", lambda: rt.bus.consume(inventories, self.resync.on_inventory))
        rt.task("membership", lambda: rt.bus.consume(members, self.membership.on_membership))
        rt.task("auto-sleep", self.auto_sleep.run)


async def setup(rt: Runtime, settings: Settings) -> None:
    _, shards, names = await asyncio.gather(  # at once, as the registry's
        rt.bus.declare_streams("platform", "commands"),
        open_shards(rt.bus),
        rt.bus.bucket(subjects.BUCKET_WORKLOAD_NAMES, WorkloadName),
    )
    lifecycle = Lifecycle(settings, rt.bus, shards, names, rt.telemetry)
    await until_done(
        "moving the desired state into its buckets", functools.partial(move_retired, rt.bus, shards, names)
    )
    await until_done("loading the desired state", lifecycle.desired.keep)
    rt.on_stop(lifecycle.desired.stop)
    await lifecycle.workloads.republish_pending()
    lifecycle.install(rt.endpoints)
    lifecycle.start(rt)


async def run(settings: Settings, **options: Unpack[Options]) -> None:
    await serve("lifecycle", settings.common, functools.partial(setup, settings=settings), **options)
