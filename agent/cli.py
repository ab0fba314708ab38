"""``python -m agent [run] --server URL [--token T] ...``: run one agent in the foreground.

Exit status: 0 after SIGINT/SIGTERM (a clean stop), 2 when the agent cannot go
on (bad token, revoked, duplicate cluster, bad configuration: ``error: ...`` on
stderr), 1 on an unexpected failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from agent import VERSION
from agent.errors import AgentError
from agent.running import planned_cluster, run
from agent.settings import DRIVERS, AgentSettings
from schemas.loop_reports import quiet_cancellations

logger = logging.getLogger("agent")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PERMANENT = 2
COMMANDS = ("run",)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _float_env(name: str) -> float | None:
    value = _env(name)
    return float(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent",
        description="The Tether agent: connects this cluster to the platform, outbound only.",
    )
    parser.add_argument("--version", action="version", version=f"tether agent {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_cmd = commands.add_parser(
        "run",
        help="run the agent in the foreground (the default command)",
        description="Run the agent until SIGINT/SIGTERM. Every option has an environment fallback.",
    )
    run_cmd.add_argument(
        "--server",
        default=_env("TETHER_AGENT_SERVER"),
        help="NATS URL(s) of the platform, comma separated [$TETHER_AGENT_SERVER]; "
        "default: the one used when the cluster was connected",
    )
    run_cmd.add_argument(
        "--token",
        default=_env("TETHER_AGENT_TOKEN"),
        help="one-time connect token from 'tether cluster connect' [$TETHER_AGENT_TOKEN; "
        "prefer the variable: arguments are visible to other users]",
    )
    run_cmd.add_argument(
        "--driver",
        choices=DRIVERS,
        default=_env("TETHER_AGENT_DRIVER") or "sim",
        help="how to reach the cluster [$TETHER_AGENT_DRIVER; default: sim]",
    )
    run_cmd.add_argument(
        "--state-dir",
        type=Path,
        default=_env("TETHER_AGENT_STATE_DIR"),
        help="where credentials and driver state live [$TETHER_AGENT_STATE_DIR; "
        "default: $XDG_STATE_HOME/tether/agents/<cluster from the token>]",
    )
    run_cmd.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        default=None,
        help="seconds between heartbeats [$TETHER_AGENT_HEARTBEAT_INTERVAL; default: what the platform says]",
    )
    run_cmd.add_argument(
        "--sim-nodes",
        type=int,
        default=None,
        help="nodes of the simulated cluster [$TETHER_SIM_NODES; default: 3]",
    )
    run_cmd.add_argument(
        "--sim-cluster-uid",
        default=None,
        help="UID of the simulated cluster [$TETHER_SIM_CLUSTER_UID; default: generated once, kept]",
    )
    run_cmd.add_argument("--kubeconfig", type=Path, default=None, help="kubeconfig for the kube driver [$KUBECONFIG]")
    run_cmd.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        help="CA certificate that signed the NATS server's TLS certificate [$TETHER_AGENT_CA_FILE]",
    )
    run_cmd.add_argument(
        "--inventory-interval",
        type=float,
        metavar="SECONDS",
        default=None,
        help="seconds between inventory reports [$TETHER_INVENTORY_INTERVAL; default: 120]",
    )
    return parser


def _normalise(argv: list[str]) -> list[str]:
    """``run`` is the default command: ``python -m agent --server URL`` means ``run --server URL``."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version")):
        return argv
    return ["run", *argv]


def setup_logging() -> None:
    level = (_env("TETHER_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def settings_from_args(args: argparse.Namespace) -> AgentSettings:
    try:
        heartbeat = args.heartbeat_interval or _float_env("TETHER_AGENT_HEARTBEAT_INTERVAL")
        sim_nodes = args.sim_nodes if args.sim_nodes is not None else int(_env("TETHER_SIM_NODES") or 3)
        inventory = args.inventory_interval
        if inventory is None:
            inventory = _float_env("TETHER_INVENTORY_INTERVAL")
        if inventory is None:
            inventory = 120.0
    except ValueError as exc:
        raise AgentError(f"invalid number in the environment: {exc}") from None
    return AgentSettings(
        server=args.server or "",
        token=args.token,
        driver=args.driver,
        state_dir=args.state_dir,
        heartbeat_interval=heartbeat,
        sim_nodes=sim_nodes,
        sim_cluster_uid=args.sim_cluster_uid,
        kubeconfig=args.kubeconfig,
        inventory_interval=inventory,
        ca_file=args.ca_file or (Path(ca) if (ca := os.environ.get("TETHER_AGENT_CA_FILE")) else None),
    )


async def _serve(settings: AgentSettings) -> int:
    task = asyncio.create_task(run(settings), name="agent")
    stopping = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal stopping
        if stopping:
            logger.info("%s: already stopping", sig.name)
            return
        stopping = True
        logger.info("%s: stopping", sig.name)
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await task
    except asyncio.CancelledError:
        if stopping:
            return EXIT_OK
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_OK


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (Linux, macOS), with the standard library's TLS for the
    connections the agent opens (``agent.eventloop``: uvloop's own drops an exec's last output); the standard
    loop elsewhere. A cancellation nobody retrieved is reported at DEBUG only (``schemas.loop_reports``)."""
    try:
        from agent.eventloop import AgentLoop
    except ImportError:
        return quiet_cancellations(asyncio.new_event_loop())
    loop: asyncio.AbstractEventLoop = AgentLoop()
    return quiet_cancellations(loop)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_normalise(list(sys.argv[1:] if argv is None else argv)))
    setup_logging()
    try:
        settings = settings_from_args(args)
        cluster = planned_cluster(settings)
        print(
            f"tether agent {VERSION}: driver {settings.driver}, cluster {cluster or '?'} "
            f"(state in {settings.state_path})",
            flush=True,
        )
        with asyncio.Runner(loop_factory=new_event_loop) as run:
            return run.run(_serve(settings))
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_PERMANENT
    except Exception:
        logger.exception("the agent failed unexpectedly")
        return EXIT_FAILED
