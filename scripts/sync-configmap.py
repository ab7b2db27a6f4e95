#!/usr/bin/env python3
"""Copy deploy/rarp-announce.yaml into the DaemonSet's ConfigMap (a test
checks they are equal): run after editing the example config."""
import os
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ds = os.path.join(root, "deploy/kubernetes/daemonset.yaml")
lines = open(ds).read().split("\n")
start = next(i for i, l in enumerate(lines) if l.startswith("  rarp-announce.yaml: |"))
end = start + 1
while end < len(lines) and (lines[end].startswith("    ") or lines[end] == ""):
    end += 1
cfg = open(os.path.join(root, "deploy/rarp-announce.yaml")).read().rstrip("\n").split("\n")
body = [("    " + l) if l else "" for l in cfg]
open(ds, "w").write("\n".join(lines[: start + 1] + body + lines[end:]))
