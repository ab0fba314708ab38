"""Who this agent is, on disk and to the platform.

- ``files``: every identity file of the state directory (``STATE_FILES``, the one list) and their store;
  the kube driver keeps the same list in its state Secret.
- ``users``: the NATS user the agent connects as (its own, or the one-call user of a connect token).
- ``bootstrap``: a connect token traded for a credential and a NATS user.
- ``session``: which identity to start with, bootstrap when needed, hello, renewal of the
  NATS JWT, revocation (a control notice, or the broker refusing us for good).
"""

from agent.identity.files import (
    CREDENTIALS_FILE,
    NATS_CREDS_FILE,
    STATE_FILES,
    Credentials,
    IdentityFiles,
)
from agent.identity.session import Plan, Session, plan, planned_cluster

__all__ = [
    "CREDENTIALS_FILE",
    "NATS_CREDS_FILE",
    "STATE_FILES",
    "Credentials",
    "IdentityFiles",
    "Plan",
    "Session",
    "plan",
    "planned_cluster",
]
