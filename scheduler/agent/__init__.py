"""The node agent: discover a GPU node's topology, measure its links, publish it on the Node.

- ``nvml_source``: GPU facts from NVML (``nvidia-ml-py``), every call allowed to fail;
  ``ReplaySource`` plays back recorded NVML answers (tests, support bundles);
- ``smi_source``: ``nvidia-smi topo -m`` and ``nvidia-smi -q -x`` run with a timeout;
- ``discover``: NVML first, nvidia-smi per field where NVML has no answer -> ``Discovery``;
- ``measure``: time-bounded copy bandwidth with torch (optional);
- ``publish``: patch the node's annotation and missing GPU Feature Discovery labels
  (the only module here that imports ``kubernetes``).

See docs/agent.md.
"""
