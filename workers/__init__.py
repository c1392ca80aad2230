"""workers: the RQ side of loravet (resident vetting worker, report assembly, webhook delivery).

The contracts, the Redis data model, the content store and webhook security the API shares with the
workers live in the torch-free ``core`` package; nothing outside ``workers`` imports from here except
the CLIs and the RQ job paths named by string (``workers.jobs.vet_adapter``).
"""
