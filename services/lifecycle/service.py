"""Lifecycle: the service and ``run``.

Every change is written to KV first (desired state, with a new generation and operation id,
compare-and-set), then published as a command whose ``Nats-Msg-Id`` is the operation id. A crash between
the two is repaired at start: every record not yet observed at its generation is published again, and
the stream drops the copies it already has. Results and inventories come back on the EVT stream through
durable consumers shared by all replicas.

The parts, each its own module: ``workloads`` (the endpoints), ``sending`` (commands and events),
``results``, ``resync`` (inventories), ``membership`` (RBAC fan-out), ``autosleep``, ``removal`` (a
removed cluster's deletions), over ``store`` (the desired state) and ``peers`` (the other services).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from schemas import subjects
from schemas.messages import NameRequest, WorkloadAction, WorkloadCreate, WorkloadQuery, WorkloadRecord, WorkloadRef
from services import VERSION
from services.bus import (
    Bucket,
    Connection,
    JetStream,
    ServiceHost,
    Telemetry,
    close,
    connect,
    ensure_bucket,
    ensure_platform_streams,
)
from services.bus.consuming import consume
from services.bus.settings import ServiceSettings
from services.bus.streams import ensure_cmd_streams
from services.lifecycle.autosleep import AutoSleep
from services.lifecycle.membership import MembershipFanout
from services.lifecycle.metrics import Metrics
from services.lifecycle.peers import Peers
from services.lifecycle.removal import Removal
from services.lifecycle.results import Results
from services.lifecycle.resync import InventoryResync
from services.lifecycle.sending import Sender
from services.lifecycle.store import Desired
from services.lifecycle.workloads import Workloads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    sleep_check_interval: float = 15.0
    """Seconds between checks for tenants idle past their ``sleep_after``."""

    empty_grace: float = 600.0
    """Seconds a cluster's desired state must stay empty before its leftovers are deleted."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            common=ServiceSettings.from_env(),
            sleep_check_interval=float(os.environ.get("TETHER_SLEEP_CHECK_INTERVAL", "15")),
            empty_grace=float(os.environ.get("TETHER_EMPTY_GRACE", "600")),
        )


RESULT_CONCURRENCY = 32
"""Results of different clusters recorded at once (one cluster's still in order): each waits on KV and
stream round trips, and one at a time capped the fleet at about a hundred commands a second."""


class Lifecycle:
    """Wires lifecycle's parts over one desired-state bucket."""

    def __init__(
        self,
        settings: Settings,
        nc: Connection,
        js: JetStream,
        bucket: Bucket[WorkloadRecord],
        telemetry: Telemetry | None = None,
    ) -> None:
        metrics = Metrics(telemetry or Telemetry.create("lifecycle"))
        self.desired = Desired(bucket)
        sender = Sender(js, metrics)
        peers = Peers(nc, settings.common.bus.request_timeout)
        self.workloads = Workloads(self.desired, sender, peers)
        self.results = Results(self.desired, sender, metrics)
        self.resync = InventoryResync(self.desired, sender, metrics, settings.empty_grace)
        self.membership = MembershipFanout(self.desired, sender, peers)
        self.removal = Removal(self.desired, sender)
        self.auto_sleep = AutoSleep(self.desired, self.workloads.action, metrics, settings.sleep_check_interval)

    def install(self, host: ServiceHost) -> None:
        L = subjects.Lifecycle
        host.endpoint(L.CREATE, WorkloadCreate, self.workloads.create)
        host.endpoint(L.GET, WorkloadRef, self.workloads.get)
        host.endpoint(L.LIST, WorkloadQuery, self.workloads.list)
        host.endpoint(L.ACTION, WorkloadAction, self.workloads.action)
        host.endpoint(L.FORGET_CLUSTER, NameRequest, self.removal.forget_cluster)

    def start(self, js: JetStream, telemetry: Telemetry, tg: asyncio.TaskGroup) -> None:
        """The durable consumers of results, inventories and membership changes, and auto-sleep."""
        evt = subjects.EVT_STREAM
        tracer = telemetry.tracer("tether.lifecycle")
        results = consume(
            js,
            stream=evt,
            durable=subjects.LIFECYCLE_RESULTS_CONSUMER,
            filter_subject=subjects.evt_kind(subjects.EVT_RESULT),
            handler=self.results.on_result,
            tracer=tracer,
            concurrency=RESULT_CONCURRENCY,
        )
        inventories = consume(
            js,
            stream=evt,
            durable=subjects.LIFECYCLE_INVENTORY_CONSUMER,
            filter_subject=subjects.evt_kind(subjects.EVT_INVENTORY),
            handler=self.resync.on_inventory,
            batch=8,
        )
        members = consume(
            js,
            stream=subjects.EVENTS_STREAM,
            durable=subjects.LIFECYCLE_MEMBERSHIP_CONSUMER,
            filter_subject=subjects.MEMBERSHIP_CHANGED,
            handler=self.membership.on_membership,
        )
        tg.create_task(results, name="lifecycle-results")
        tg.create_task(inventories, name="lifecycle-inventory")
        tg.create_task(members, name="lifecycle-membership")
        tg.create_task(self.auto_sleep.run(), name="lifecycle-auto-sleep")


async def run(settings: Settings, *, telemetry: Telemetry | None = None, ready: asyncio.Event | None = None) -> None:
    telemetry = telemetry or Telemetry.create("lifecycle", settings.common.telemetry)
    nc = await connect(settings.common.bus, "lifecycle")
    try:
        js = nc.jetstream()
        replicas = settings.common.bus.replicas
        await ensure_platform_streams(js, replicas)
        await ensure_cmd_streams(js, replicas)
        bucket = await ensure_bucket(js, subjects.BUCKET_DESIRED, WorkloadRecord, replicas=replicas, history=5)
        lifecycle = Lifecycle(settings, nc, js, bucket, telemetry)
        await lifecycle.workloads.republish_pending()
        host = ServiceHost(nc, "lifecycle", VERSION, telemetry.tracer(__name__))
        lifecycle.install(host)
        async with host, asyncio.TaskGroup() as tg:
            lifecycle.start(js, telemetry, tg)
            logger.info("lifecycle ready")
            if ready:
                ready.set()
            await asyncio.Event().wait()
    finally:
        await close(nc)
        telemetry.shutdown()
