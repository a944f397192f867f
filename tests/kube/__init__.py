"""In-process Kubernetes API server for integration tests (real HTTP on 127.0.0.1, in-memory store).

Entry points: ``apiserver.running_apiserver()`` (context manager) and the ``apiserver`` pytest fixture
in ``conftest.py``. What it does and does not emulate: docs/test-apiserver.md.
"""
