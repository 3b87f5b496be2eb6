"""`python -m vibeinsight`: the CLI."""

from vibeinsight.cli import app

app()
