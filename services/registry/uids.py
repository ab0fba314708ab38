"""The duplicate guard: a create-only claim per physical cluster UID, so one Kubernetes cluster cannot be
connected twice under two names."""

from __future__ import annotations

from schemas.errors import Conflict, Unavailable
from schemas.messages import ClusterRecord, ClusterUidClaim
from services.bus import Records
from services.registry import logic


class UidClaims:
    def __init__(self, uids: Records[ClusterUidClaim], clusters: Records[ClusterRecord]) -> None:
        self.uids = uids
        self.clusters = clusters

    async def claim(self, uid: str, name: str) -> bool:
        """Claim ``uid`` for cluster ``name``. Created first (a new cluster's UID is free: no read before), read
        only when taken. True when this call made the claim; raises when a live cluster holds it."""
        for _ in range(2):
            try:
                await self.uids.create(uid, ClusterUidClaim(cluster=name))
                return True
            except Conflict:
                claim = await self.uids.get(uid)
            if claim is None:
                continue  # released in between (its cluster disconnected): claim it again
            if claim[0].cluster == name:
                return False  # this cluster's own claim (a token issued again)
            holder = await self.clusters.get(claim[0].cluster)
            if holder is not None and holder[0].state != "disconnected":
                raise logic.duplicate_error(uid, claim[0].cluster)
            await self.uids.put(uid, ClusterUidClaim(cluster=name))
            return True
        raise Unavailable(f"the claim of cluster UID {uid} keeps changing; try again")

    async def release(self, uid: str, name: str, *, purge: bool = False) -> None:
        """Drop ``name``'s claim of ``uid`` (a disconnect, or a bootstrap that lost the token to another
        request); a claim another cluster has made since is left alone. ``purge``: its history too (the
        cluster's removal leaves nothing of it behind)."""
        claim = await self.uids.get(uid)
        if claim is not None and claim[0].cluster == name:
            await (self.uids.purge(uid) if purge else self.uids.delete(uid))
