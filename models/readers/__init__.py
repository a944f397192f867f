"""Readers: external descriptions of a node turned into our spec types.

- ``nvidia_smi``: ``nvidia-smi topo -m`` and ``nvidia-smi -q [-x]`` output;
- ``published``: ``topo -m`` matrices restated as JSON (shared reference data);
- ``annotation``: our versioned node annotation ``toposched.io/topology``;
- ``k8s_node``: a Kubernetes Node object (plain dict) -> ``NodeSpec``.

See docs/readers.md.
"""
