"""service: the loravet HTTP API (FastAPI). Never imports torch. From the worker side it imports only
the torch-free ``workers.contracts``, ``workers.content_store`` and ``workers.webhook_security``
(enforced by tests/service/test_import_boundaries.py).
"""
