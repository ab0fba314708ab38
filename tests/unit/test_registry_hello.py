"""The registry's hello: its own admission, larger than the bootstrap's (a hello is a read), with its JetStream
look-ups still bounded as before; a disconnected cluster's hello is refused as always."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from schemas import subjects
from schemas.errors import Forbidden, Overloaded, Unauthenticated
from schemas.messages import AGENT_PROTOCOL, AgentHello, ClusterRecord
from schemas.retrying import NOT_LISTENING_BACKOFF
from services.bus import Endpoints
from services.bus.admission import Admission, AdmissionLimits
from services.bus.memory import MemoryBus
from services.registry import logic
from services.registry.service import CONSUMER_ASK_BURST, Registry, Settings, install

R = subjects.Registry


class SlowLookUps(MemoryBus):
    """Counts the consumer look-ups running at once; each takes until ``release`` is set. ``busy`` is set once
    ``expected`` run at once."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.running = 0
        self.most = 0
        self.busy = asyncio.Event()
        self.release = asyncio.Event()

    async def ensure_agent_consumer(self, cluster: str, *, look_up: bool = True) -> bool:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= self.expected:
            self.busy.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return False


async def registry(bus: MemoryBus, settings: Settings, names: list[str]) -> Registry:
    clusters = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord)
    for name in names:
        record = ClusterRecord(
            name=name, state="connected", cluster_uid=f"uid-{name}", credential_hash=logic.hash_secret(f"cred-{name}")
        )
        await clusters.create(name, record)
    uids = await bus.bucket(subjects.BUCKET_CLUSTER_UIDS, ClusterRecord)  # type: ignore[arg-type]
    projects = await bus.bucket(subjects.BUCKET_PROJECTS, ClusterRecord)  # type: ignore[arg-type]
    return Registry(settings, bus, clusters, uids, projects)  # type: ignore[arg-type]


def hello(name: str, *, bound: bool) -> AgentHello:
    return AgentHello(
        cluster=name,
        credential=f"cred-{name}",
        cluster_uid=f"uid-{name}",
        protocol=AGENT_PROTOCOL,
        consumer_bound=bound,
    )


def admissions(reg: Registry) -> dict[str, AdmissionLimits | None]:
    endpoints = Endpoints()
    install(reg, endpoints)
    return {e.subject: e.admission for e in endpoints.items}


async def refused_of_a_wave(limits: AdmissionLimits, handling: float, wave: int) -> int:
    """Requests of ``wave`` arriving at once that are told to come back, once the admission has learnt that one
    takes ``handling`` seconds (a record read on a nats-server busy with a reconnect storm)."""
    admission = Admission("test", limits)

    async def work() -> None:
        await asyncio.sleep(handling)  # the handling itself, not a wait for a condition

    await asyncio.gather(*(admission.run(work) for _ in range(limits.concurrency)))
    results = await asyncio.gather(*(admission.run(work) for _ in range(wave)), return_exceptions=True)
    return sum(isinstance(r, Overloaded) for r in results)


async def test_hellos_are_admitted_at_their_own_larger_concurrency_than_bootstraps() -> None:
    reg = await registry(MemoryBus(), Settings(), [])
    limits = admissions(reg)
    hello_limits, bootstrap_limits = limits[R.AGENT_HELLO], limits[R.AGENT_BOOTSTRAP]
    assert hello_limits is not None and bootstrap_limits is not None
    assert hello_limits.concurrency == Settings().hello_concurrency == 256
    assert bootstrap_limits.concurrency == Settings().admission_concurrency == 64, "the bootstrap's is lower"
    assert hello_limits.queue == bootstrap_limits.queue and hello_limits.max_wait == bootstrap_limits.max_wait
    # 600 hellos at once, each taking 0.25 s: all admitted at 256 at once. At the bootstrap's 64, each taking
    # 0.5 s (three fsynced writes), about half are told to come back, their appointments spaced at the 128/s
    # it serves.
    assert await refused_of_a_wave(hello_limits, 0.25, 600) == 0
    assert await refused_of_a_wave(bootstrap_limits, 0.5, 600) > 250


async def test_hellos_look_up_their_consumer_no_more_at_once_than_before() -> None:
    bus = SlowLookUps(expected=8)
    names = [f"c{i}" for i in range(100)]
    reg = await registry(bus, Settings(consumer_creations=8, hello_concurrency=256), names)
    hellos = [asyncio.create_task(reg.hello(hello(n, bound=False), n)) for n in names]
    await asyncio.wait_for(bus.busy.wait(), 5)  # the first look-ups are under way
    bound = await asyncio.wait_for(reg.hello(hello("c0", bound=True), "c0"), 5)
    assert bound.cluster == "c0", "a bound agent's hello is answered without a look-up"
    bus.release.set()
    welcomes = await asyncio.wait_for(asyncio.gather(*hellos), 10)
    assert [w.consumer for w in welcomes] == [subjects.agent_consumer(n) for n in names]
    assert bus.most == 8, "the JetStream look-ups are bounded at the consumer creations' concurrency"


async def test_a_disconnected_clusters_hello_is_refused() -> None:
    bus = MemoryBus()
    reg = await registry(bus, Settings(), ["gone"])
    found = await reg.clusters.get("gone")
    assert found is not None
    await reg.clusters.update("gone", logic.disconnect(found[0], 1.0), found[1])
    with pytest.raises(Unauthenticated):
        await reg.hello(hello("gone", bound=True), "gone")


async def test_a_reconnect_hello_is_answered_from_the_kept_records_and_anything_else_reads_the_bucket() -> None:
    bus = MemoryBus()
    reg = await registry(bus, Settings(), ["c1", "c2"])
    reg.kept = await reg.clusters.view()
    reads: list[str] = []
    get = reg.clusters.get

    async def counted(key: str) -> tuple[ClusterRecord, int] | None:
        reads.append(key)
        return await get(key)

    reg.clusters.get = counted  # type: ignore[method-assign]
    welcome = await reg.hello(hello("c1", bound=True), "c1")
    assert welcome.cluster == "c1" and reads == [], "a reconnect costs no read"
    newer = msgspec.structs.replace(hello("c1", bound=True), agent_version="9.9")
    await reg.hello(newer, "c1")
    assert reads == ["c1"], "a change is read and written, never decided on the copy"
    assert (await get("c1") or (None, 0))[0].agent_version == "9.9"  # type: ignore[union-attr]
    wrong = msgspec.structs.replace(hello("c2", bound=True), credential="stolen")
    with pytest.raises(Unauthenticated):
        await reg.hello(wrong, "c2")
    assert reads[-1] == "c2", "a refusal is decided on the bucket's record"
    found = await get("c2")
    assert found is not None
    await reg.clusters.update("c2", logic.disconnect(found[0], 1.0), found[1])
    with pytest.raises(Unauthenticated):
        await reg.hello(hello("c2", bound=True), "c2")


async def test_the_welcome_sizes_the_unheard_backoff_to_the_fleet() -> None:
    small = await registry(MemoryBus(), Settings(), ["c1"])
    small.kept = await small.clusters.view()
    assert (await small.hello(hello("c1", bound=True), "c1")).unheard_backoff == NOT_LISTENING_BACKOFF[1]
    assert logic.unheard_backoff(10_000) == pytest.approx(13.33, abs=0.01)  # 1,000 unheard requests a second
    assert logic.unheard_backoff(10**7) == 30.0


class RecordedEnsures(MemoryBus):
    """Records each consumer ensure's ``(cluster, look_up)``."""

    def __init__(self) -> None:
        super().__init__()
        self.ensures: list[tuple[str, bool]] = []

    async def ensure_agent_consumer(self, cluster: str, *, look_up: bool = True) -> bool:
        self.ensures.append((cluster, look_up))
        return await super().ensure_agent_consumer(cluster, look_up=look_up)


async def test_a_hello_saying_its_consumer_is_gone_has_it_made_without_a_look_up_and_only_its_own() -> None:
    bus = RecordedEnsures()
    reg = await registry(bus, Settings(), ["c1", "c2"])
    gone = msgspec.structs.replace(hello("c1", bound=False), consumer_gone=True)
    welcome = await reg.hello(gone, "c1")
    assert welcome.consumer == subjects.agent_consumer("c1")  # named: the agent binds without a look-up
    await reg.hello(hello("c2", bound=False), "c2")
    assert bus.ensures == [("c1", False), ("c2", True)]
    # Sent on another cluster's subject, the same hello is refused before anything is made.
    with pytest.raises(Forbidden):
        await reg.hello(gone, "c2")
    assert bus.ensures == [("c1", False), ("c2", True)]


async def test_one_clusters_hello_loop_costs_jetstream_a_bounded_number_of_consumer_requests() -> None:
    """An agent saying hello in a loop, its consumer "gone", must not hold the look-ups every other agent's
    recovery waits for: its hellos are answered, but past a small burst they cost JetStream nothing."""
    bus = RecordedEnsures()
    reg = await registry(bus, Settings(), ["loud", "quiet"])
    gone = msgspec.structs.replace(hello("loud", bound=False), consumer_gone=True)
    welcomes = [await reg.hello(gone, "loud") for _ in range(50)]
    assert all(w.consumer == subjects.agent_consumer("loud") for w in welcomes), "answered, naming the consumer"
    loud = [c for c, _ in bus.ensures if c == "loud"]
    assert len(loud) == int(CONSUMER_ASK_BURST), f"{len(loud)} consumer requests for 50 hellos"
    await reg.hello(hello("quiet", bound=False), "quiet")
    assert bus.ensures[-1] == ("quiet", True), "another cluster's ask is not held back"
