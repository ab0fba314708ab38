"""How one agent is configured: where the platform is, who it is, which driver it uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from agent.errors import PermanentError
from schemas.credentials import CONNECT_TOKEN_PREFIX, parse_connect_token
from schemas.errors import TetherError

DriverName = Literal["sim", "kube"]
DRIVERS: tuple[str, ...] = get_args(DriverName)


def cluster_of_token(token: str) -> str:
    """The cluster a connect token belongs to; PermanentError when the token is malformed."""
    try:
        cluster, _secret, _jwt = parse_connect_token(token.strip())
    except TetherError as exc:
        raise PermanentError(
            f"{exc.description}: expected '{CONNECT_TOKEN_PREFIX}.<cluster>.<secret>[.<jwt>]' "
            "as printed by 'tether cluster connect'"
        ) from None
    return cluster


def default_state_root() -> Path:
    """``$XDG_STATE_HOME/tether/agents`` (``~/.local/state/tether/agents`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tether" / "agents"


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """Everything one agent process needs; validated on construction (PermanentError)."""

    server: str = ""
    """NATS URL(s) of the platform, comma separated for a cluster of servers.

    Empty: the server the agent used when it first connected (kept with its credentials).
    """

    token: str | None = None
    """The one-time connect token (``tct.<cluster>.<secret>``); only needed on the first start."""

    driver: DriverName = "sim"
    """How the agent reaches its cluster: ``sim`` (in memory) or ``kube`` (a real API server)."""

    state_dir: Path | None = None
    """Where the agent keeps its credential and driver state.

    None: ``$XDG_STATE_HOME/tether/agents/<cluster>``, the cluster taken from ``token``;
    without a token the state directory must be given. Always set after construction.
    """

    heartbeat_interval: float | None = None
    """Seconds between heartbeats; None: the interval the platform sends in its welcome."""

    sim_nodes: int = 3
    """Number of nodes of the simulated cluster (``sim`` driver)."""

    sim_cluster_uid: str | None = None
    """UID of the simulated cluster; None: ``$TETHER_SIM_CLUSTER_UID``, else one generated
    once and kept in the state directory."""

    kubeconfig: Path | None = None
    """Kubeconfig for the ``kube`` driver; None: in-cluster config, then ``$KUBECONFIG``."""

    ca_file: Path | None = None
    """CA certificate (PEM) the NATS server's TLS certificate is verified with (``tls://`` URLs);
    None: the system's trust store."""

    request_timeout: float = 5.0
    """Seconds to wait for the platform to answer one request (bootstrap, hello)."""

    shutdown_timeout: float = 5.0
    """Seconds allowed for finishing the command being applied, and again for draining the
    NATS connection, when the agent stops."""

    inventory_interval: float = 120.0
    """Seconds between periodic inventory reports (one is also sent after every (re)connect)."""

    def __post_init__(self) -> None:
        if self.driver not in DRIVERS:
            raise PermanentError(f"unknown driver {self.driver!r}: expected one of {', '.join(DRIVERS)}")
        if self.token is not None:
            token = self.token.strip()
            if not token:
                object.__setattr__(self, "token", None)
            else:
                cluster_of_token(token)
                object.__setattr__(self, "token", token)
        if self.heartbeat_interval is not None and not 0 < self.heartbeat_interval <= 3600:
            raise PermanentError(
                f"heartbeat interval must be between 0 and 3600 seconds, not {self.heartbeat_interval:g}"
            )
        if self.sim_nodes < 0:
            raise PermanentError(f"sim nodes must not be negative, not {self.sim_nodes}")
        if self.request_timeout <= 0 or self.shutdown_timeout <= 0:
            raise PermanentError("request and shutdown timeouts must be positive")
        if not 0 < self.inventory_interval <= 86400:
            raise PermanentError(
                f"inventory interval must be between 0 and 86400 seconds, not {self.inventory_interval:g}"
            )
        if self.state_dir is None:
            if self.token is None:
                raise PermanentError(
                    "no state directory and no connect token: give --state-dir of an agent that "
                    "connected before, or --token to connect a cluster"
                )
            object.__setattr__(self, "state_dir", default_state_root() / cluster_of_token(self.token))
        else:
            object.__setattr__(self, "state_dir", Path(self.state_dir).expanduser())

    @property
    def state_path(self) -> Path:
        """``state_dir``, typed as always set (it is, after construction)."""
        assert self.state_dir is not None
        return self.state_dir

    @property
    def token_cluster(self) -> str | None:
        """The cluster named in the connect token, if a token was given."""
        return cluster_of_token(self.token) if self.token else None

    @property
    def servers(self) -> list[str]:
        """``server`` split into its URLs."""
        return split_servers(self.server)

    def __repr__(self) -> str:
        token = "'***'" if self.token else "None"
        return (
            f"AgentSettings(server={self.server!r}, token={token}, driver={self.driver!r}, "
            f"state_dir={self.state_dir!r}, heartbeat_interval={self.heartbeat_interval!r}, "
            f"sim_nodes={self.sim_nodes!r}, sim_cluster_uid={self.sim_cluster_uid!r}, "
            f"kubeconfig={self.kubeconfig!r}, inventory_interval={self.inventory_interval!r})"
        )


def split_servers(server: str) -> list[str]:
    return [s.strip() for s in server.split(",") if s.strip()]
