"""core: what the API, the workers and the CLIs share, without torch.

``contracts`` (job arguments, reports, webhook events, queue names), ``redis_model`` (every Redis key
loravet writes, and the only code that reads or writes them), ``content_store`` (uploads and reports
by sha256, on a local directory or, through ``s3_content_store``, an S3-compatible bucket),
``webhook_security`` (callback-address policy, signing secrets) and ``provenance`` (file hashes,
package versions, git state). Imports stdlib, pydantic and redis only, plus boto3 in
``s3_content_store``, which is imported only where the S3 store is selected.
"""
