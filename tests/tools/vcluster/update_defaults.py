"""Regenerate ``agent/drivers/vcluster-<version>.json``: the default values of the vCluster chart we pin.

The vCluster binary reads its whole configuration from the ``config.yaml`` of its ``vc-config-<name>``
Secret and fills in nothing itself (Helm writes the chart's defaults merged with the user's values there),
so the agent needs the chart's defaults of the pinned version as data. Comments are dropped; the values
are the chart's (loft-sh/vcluster ``chart/values.yaml``, Apache-2.0).

    git -C <vcluster checkout> show v0.36.1:chart/values.yaml > /tmp/values.yaml
    python tests/tools/vcluster/update_defaults.py /tmp/values.yaml 0.36.1
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def main(values: str, version: str) -> None:
    data = yaml.safe_load(Path(values).read_text())
    out = ROOT / "agent" / "drivers" / f"vcluster-{version}.json"
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
