"""Insight from a transcript. LocalAnalyzer computes metrics only; Gemini comes later."""

from __future__ import annotations

from abc import abstractmethod

from prefect.blocks.core import Block

from vibeinsight import analysis
from vibeinsight.schemas import Transcript


class Analyzer(Block):
    _block_type_name = "VibeInsight Analyzer"

    @abstractmethod
    def analyze(self, transcript: Transcript, duration_s: float) -> dict:
        """The result document's `analysis`, with `engine` naming who produced it."""


class LocalAnalyzer(Analyzer):
    """Metrics that need no language model (no summary, sentiment or topics)."""

    _block_type_name = "VibeInsight Local Analyzer"

    top_terms: int = 10

    def analyze(self, transcript: Transcript, duration_s: float) -> dict:
        return analysis.analyze(transcript.segments, duration_s, transcript.language, self.top_terms)
