"""The Kubernetes versions a tenant cluster may run, published by the platform (API ``/api/v1/versions``,
``tether versions``) and enforced by lifecycle at create and upgrade.

They are the versions the pinned tenant engine (vCluster, see ``agent/deploy/README.md``) ships images for.
An upgrade goes up by at most one minor version at a time, as Kubernetes allows; never down.
"""

from __future__ import annotations

SUPPORTED_MINORS: tuple[int, ...] = tuple(range(31, 37))
"""``v1.31`` .. ``v1.36``."""
DEFAULT_VERSION = "v1.36"
TENANT_ENGINE = "vCluster 0.36.1 (ghcr.io/loft-sh/vcluster-oss)"
UPGRADE_RULE = "one minor version at a time, never down"


def supported_versions() -> list[str]:
    return [f"v1.{minor}" for minor in SUPPORTED_MINORS]
