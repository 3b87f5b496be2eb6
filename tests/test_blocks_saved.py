"""Blocks as Prefect users expect them: a document saved under the documented name is what runs use."""

from __future__ import annotations

import pytest

from blocks import registry
from blocks.transcriber import LocalWhisper
from tests.conftest import SAMPLE
from tests.uploads import as_upload

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture()
def clean_blocks():
    from prefect.client.orchestration import get_client

    def delete_saved():
        with get_client(sync_client=True) as client:
            for doc in client.read_block_documents():
                if doc.name == registry.BLOCK_NAME:
                    client.delete_block_document(doc.id)

    delete_saved()
    yield
    delete_saved()


def test_environment_fills_in_when_nothing_is_saved(home, clean_blocks, monkeypatch):
    monkeypatch.setenv("VIBEINSIGHT_WHISPER_BEAM_SIZE", "4")
    assert registry.transcriber().beam_size == 4


def test_a_saved_document_wins_over_the_environment(home, clean_blocks, monkeypatch):
    saved = registry.save_all()
    assert saved["transcriber"] == "vibeinsight-local-whisper"
    # edited later, as in the Prefect UI
    doc = LocalWhisper.load(registry.BLOCK_NAME)
    assert doc.model_cache is None  # never the saving machine's folder
    doc.beam_size = 2
    doc.save(registry.BLOCK_NAME, overwrite=True)
    monkeypatch.setenv("VIBEINSIGHT_WHISPER_BEAM_SIZE", "4")
    chosen = registry.transcriber()
    assert chosen.beam_size == 2
    assert chosen.model_cache == str(home / "models")
    # the status store is saved too
    assert registry.status_store().path.endswith("status.db")


def test_a_saved_secret_round_trips_as_a_secret(home, clean_blocks, monkeypatch):
    """A key saved from the environment (SecretStr) is hidden in the API's document and comes back whole."""
    from prefect.client.orchestration import get_client
    from pydantic import SecretStr

    from blocks.transcriber import OpenAITranscriber
    from vibeinsight.settings import get_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-saved-0123")
    get_settings.cache_clear()
    assert registry.save_all()["transcriber"] == OpenAITranscriber.get_block_type_slug()
    with get_client(sync_client=True) as client:
        shown = client.read_block_document_by_name(registry.BLOCK_NAME, OpenAITranscriber.get_block_type_slug(),
                                                   include_secrets=False)
    assert shown.data["api_key"] != "sk-saved-0123" and "sk-saved-0123" not in str(shown.data)  # obfuscated
    monkeypatch.delenv("OPENAI_API_KEY")  # from here on only the saved document knows the key
    get_settings.cache_clear()
    chosen = OpenAITranscriber.load(registry.BLOCK_NAME)
    assert isinstance(chosen.api_key, SecretStr) and chosen.api_key.get_secret_value() == "sk-saved-0123"
    assert "sk-saved-0123" not in repr(chosen)


def test_a_run_uses_the_saved_transcriber(home, clean_blocks):
    from flows.process_audio import process_audio

    LocalWhisper(model="tiny.en").save(registry.BLOCK_NAME)  # saved without a folder: the runner fills in its own
    doc = process_audio(source=as_upload(SAMPLE), language="auto")
    assert doc["status"] == "COMPLETED"
    assert doc["transcript"]["model"] == "faster-whisper/tiny.en"  # the environment says base
