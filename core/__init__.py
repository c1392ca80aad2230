"""core: what the API, the workers and the CLIs share, without torch.

``contracts`` (job arguments, reports, webhook events, queue names), ``redis_model`` (every Redis key
loravet writes, and the only code that reads or writes them), ``content_store`` (uploads and reports
by sha256), ``webhook_security`` (callback-address policy, signing secrets) and ``provenance`` (file
hashes, package versions, git state). Imports stdlib, pydantic and redis only.
"""
