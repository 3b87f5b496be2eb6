"""`vibeinsight storage setup`: the bucket, its CORS and its lifecycle rules (idempotent);
`vibeinsight storage policy`: the runs' least-privilege IAM policy for that bucket."""

from __future__ import annotations

import json

import typer

from vibeinsight.cli.common import EXIT_FAILED, fail

app = typer.Typer(no_args_is_help=True, help="The object storage bucket")


@app.command("setup")
def setup() -> None:
    """Create the bucket if missing, set CORS (origins from VIBEINSIGHT_BUCKET_CORS_ORIGINS, ETag exposed)
    and lifecycle rules: incomplete multipart uploads aborted after 1 day, the runs' workspace deleted
    after 1 day, uploads after VIBEINSIGHT_BUCKET_UPLOAD_RETENTION_DAYS (0 keeps them).

    Run it again at will: each run puts the same configuration. Prints what the bucket then holds."""
    from deployments.deploy import setup_storage

    done = setup_storage()
    if done is None:
        fail("no_cloud_storage", "set FLY_S3_ENDPOINT (or VIBEINSIGHT_STORAGE=s3) to set up a bucket", EXIT_FAILED)
    print(json.dumps(done, ensure_ascii=False, default=str))


@app.command("policy")
def policy() -> None:
    """Print the IAM policy of the runs' S3 identity (attach it to the run Machines' key or OIDC role):
    read the uploads, read, write and delete only results/ and the runs' workspace prefix."""
    from blocks.storage import runs_policy
    from vibeinsight.settings import get_settings

    s3 = get_settings().s3
    print(json.dumps(runs_policy(s3.bucket_name, s3.upload_prefixes), indent=2))
