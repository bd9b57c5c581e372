#!/usr/bin/env python3
"""Vendor the part of the real Proxmox VE API schema that labfleet uses.

Reads every `### METHOD /path` heading of shared/pve-api/SUBSET.md, finds that path and method in
shared/pve-api/pve-api-schema.json and writes them, unchanged, to fixtures/pve-api-subset.json as
{"/path": {"METHOD": info}}. Both the Proxmox client and the simulator check themselves against this
file, so CI does not depend on the 2 MB schema being beside the checkout.

Usage: python3 scripts/vendor-pve-schema.py [SHARED_DIR]   (default: ../shared)
"""
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
shared = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared"
subset_md = (shared / "pve-api" / "SUBSET.md").read_text()
schema = json.loads((shared / "pve-api" / "pve-api-schema.json").read_text())

by_path = {}


def walk(nodes):
    for node in nodes:
        by_path[node["path"]] = node
        walk(node.get("children", []))


walk(schema)

wanted = re.findall(r"^### (GET|POST|PUT|DELETE) (/\S+)", subset_md, flags=re.M)
out = {}
for method, path in wanted:
    node = by_path.get(path)
    if node is None or method not in node.get("info", {}):
        sys.exit(f"{method} {path} is in SUBSET.md but not in the schema")
    out.setdefault(path, {})[method] = node["info"][method]

# Agent sub-endpoints are summarised in SUBSET.md without their own headings; keep every path under
# the agent folder too so the client and simulator can be checked against them.
for path, node in by_path.items():
    if "/qemu/{vmid}/agent/" in path:
        for method, info in node.get("info", {}).items():
            out.setdefault(path, {})[method] = info

dest = root / "fixtures" / "pve-api-subset.json"
dest.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"wrote {dest.relative_to(root)}: {len(out)} paths, {sum(len(v) for v in out.values())} methods")
