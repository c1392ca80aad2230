"""service: the loravet HTTP API (FastAPI) and its pages. Never imports torch, nor anything from
``workers``: what it shares with the workers (contracts, the Redis data model, the content store,
webhook security) is in the torch-free ``core`` package (enforced by
tests/service/test_import_boundaries.py).
"""
