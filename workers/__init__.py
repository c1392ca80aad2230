"""workers: the RQ side of loravet (resident vetting worker, report assembly, webhook delivery).

Kept empty on purpose: the API imports ``workers.contracts``, ``workers.content_store`` and
``workers.webhook_security`` (all torch-free) and must not reach torch through this ``__init__``.
"""
