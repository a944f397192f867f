"""Everything that talks to the Kubernetes API lives here (tests/test_layering.py enforces it)."""
