"""`vibeinsight`: the command line, the top layer (it may import flows, blocks and deployments).

Kept light at import: Prefect and faster-whisper load only inside the commands, after the
embedded server has been spawned, so their start-up costs overlap.
"""

from __future__ import annotations

import typer

from vibeinsight.cli import blocks, cloud, deploy, doctor, keys, metrics, process, quota, status, storage, upload, web
from vibeinsight.cli.common import guard_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="VibeInsight audio-insight pipeline")
app.add_typer(process.app)  # process, setup, schema
app.add_typer(status.app)  # status, status-observer, reconcile
app.add_typer(cloud.app)  # upload-url
app.add_typer(upload.app)  # upload (the reference client)
app.add_typer(web.app)  # web (the reference page)
app.add_typer(deploy.app)  # trigger
app.add_typer(deploy.stack_app, name="stack")
app.add_typer(quota.app, name="quota")
app.add_typer(metrics.app)  # metrics
app.add_typer(blocks.app, name="blocks")
app.add_typer(keys.app, name="keys")
app.add_typer(doctor.app)  # doctor
app.add_typer(storage.app, name="storage")  # storage setup
guard_app(app)  # no traceback reaches a user: every failure is `error: CODE: message`
