"""kube-scheduler HTTP extender mode: wire format, verbs on the shared cache and engine, HTTP server (docs/extender.md)."""
