"""`vibeinsight process` options of the transcription engine (parsed in-process; no flow runs)."""

from __future__ import annotations

import pytest

from vibeinsight.cli.process import split_vocabulary

pytestmark = pytest.mark.unit


def test_vocabulary_is_split_at_commas_trimmed_and_deduplicated():
    assert split_vocabulary(["ComfyUI, Tigris,Supabase", " Tigris ", "Prefect"]) == ["ComfyUI", "Tigris", "Supabase",
                                                                                      "Prefect"]
    assert split_vocabulary(None) is None and split_vocabulary([" , "]) is None


def test_speaker_options_reject_zero():
    from typer.testing import CliRunner

    from vibeinsight.cli import app

    result = CliRunner().invoke(app, ["process", "x.wav", "--speakers", "0"])
    assert result.exit_code == 2 and "--speakers" in result.output
    result = CliRunner().invoke(app, ["process", "--help"])
    assert all(opt in result.output for opt in ("--vocabulary", "--speakers", "--max-speakers"))
