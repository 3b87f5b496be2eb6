"""Insight from a transcript. LocalAnalyzer computes metrics only; GeminiAnalyzer adds a language
model's summary, sentiment, vibe, topics, action items and key quotes beside those metrics."""

from __future__ import annotations

import contextlib
import math
from abc import abstractmethod

from prefect.blocks.core import Block
from pydantic import ValidationError

from vibeinsight import analysis
from vibeinsight.errors import PipelineError
from vibeinsight.schemas import Transcript
from vibeinsight.settings import GeminiOptions
from vibeinsight.usage import ServiceUsage


class AnalysisFailed(PipelineError):
    default_code = "analysis_failed"


class Analyzer(Block):
    _block_type_name = "VibeInsight Analyzer"

    @abstractmethod
    def analyze(self, transcript: Transcript, duration_s: float) -> dict:
        """The result document's `analysis`, with `engine` naming who produced it."""

    def analyze_metered(self, transcript: Transcript, duration_s: float) -> tuple[dict, ServiceUsage | None]:
        """analyze() plus what it cost (None: nothing remote was called). A failure raises with the
        usage billed so far attached (`exc.usage`)."""
        return self.analyze(transcript, duration_s), None

    def local_metrics(self, transcript: Transcript, duration_s: float) -> dict:
        """The metrics that need no language model: what an analysis degrades to."""
        return analysis.analyze(transcript.segments, duration_s, transcript.language, getattr(self, "top_terms", 10))


class LocalAnalyzer(Analyzer):
    """Metrics that need no language model (no summary, sentiment or topics)."""

    _block_type_name = "VibeInsight Local Analyzer"

    top_terms: int = 10

    def analyze(self, transcript: Transcript, duration_s: float) -> dict:
        return self.local_metrics(transcript, duration_s)


class GeminiAnalyzer(LocalAnalyzer, GeminiOptions):
    """Gemini through google-genai, with the Insight model as response schema.

    The SDK's retries are off (vibeinsight.retry.metered_call retries 429/5xx with back-off,
    honouring Retry-After, and counts them); invalid JSON is asked for once more, then fails.
    """

    _block_type_name = "VibeInsight Gemini Analyzer"

    def client(self):
        from google import genai
        from google.genai import types

        # v1beta: the version the Gemini API docs show for structured output (responseSchema)
        options = types.HttpOptions(timeout=int(self.timeout_s * 1000), base_url=self.base_url, api_version="v1beta")
        return genai.Client(api_key=self.api_key.get_secret_value() if self.api_key else None, http_options=options)

    def analyze(self, transcript: Transcript, duration_s: float) -> dict:
        return self.analyze_metered(transcript, duration_s)[0]

    def analyze_metered(self, transcript: Transcript, duration_s: float) -> tuple[dict, ServiceUsage | None]:
        metrics = self.local_metrics(transcript, duration_s)
        usage = ServiceUsage(service="gemini", model=self.model)
        if not transcript.segments:  # nothing said: nothing to ask
            return metrics, usage
        try:
            return self._insight(transcript, metrics, usage), usage
        except Exception as exc:
            usage.gave_up = True
            with contextlib.suppress(AttributeError):  # what was billed travels with the error
                exc.usage = usage
            raise

    def _insight(self, transcript: Transcript, metrics: dict, usage: ServiceUsage) -> dict:
        from vibeinsight.insight import INSTRUCTIONS, MERGE_INSTRUCTIONS, split_lines, transcript_lines

        client = self.client()
        lines = transcript_lines(transcript.segments)
        text = "\n".join(lines)
        tokens = self._call(lambda: client.models.count_tokens(model=self.model, contents=text), usage,
                            "count_tokens").total_tokens
        parts = max(1, math.ceil(tokens * 1.1 / self.max_input_tokens))  # 10 % headroom for the estimate
        if parts == 1:
            insight = self._generate(client, INSTRUCTIONS, text, usage)
        else:
            partial = [self._generate(client, INSTRUCTIONS, "\n".join(g), usage) for g in split_lines(lines, parts)]
            merged_input = "\n\n".join(f"Part {i + 1}:\n{p.model_dump_json()}" for i, p in enumerate(partial))
            insight = self._generate(client, MERGE_INSTRUCTIONS, merged_input, usage)
        metrics.update(insight.clamped().model_dump(mode="json"))
        metrics["engine"] = f"gemini/{self.model}+local-metrics"
        metrics["llm"] = {"model": self.model, "input_tokens": tokens, "parts": parts}
        return metrics

    def _generate(self, client, instructions: str, text: str, usage: ServiceUsage):
        from google.genai import types

        from vibeinsight.insight import Insight

        config = types.GenerateContentConfig(system_instruction=instructions, temperature=0.2,
                                             response_mime_type="application/json", response_schema=Insight)
        for attempt in (1, 2):  # a second try when the JSON does not validate
            resp = self._call(lambda: client.models.generate_content(model=self.model, contents=text, config=config),
                              usage, "generate_content")
            meta = resp.usage_metadata
            if meta is not None:
                usage.tokens["gemini_input"] = usage.tokens.get("gemini_input", 0) + (meta.prompt_token_count or 0)
                usage.tokens["gemini_output"] = (usage.tokens.get("gemini_output", 0)
                                                 + (meta.candidates_token_count or 0)
                                                 + (getattr(meta, "thoughts_token_count", None) or 0))
            try:
                return Insight.model_validate_json(resp.text or "")
            except ValidationError as exc:
                usage.failed += 1  # billed, but no use: a failed call for the success rate
                if attempt == 2:
                    raise AnalysisFailed(f"Gemini returned invalid JSON twice: {exc.errors()[0]['msg']}",
                                         "analysis_invalid_output") from exc
                usage.retries += 1

    def _call(self, fn, usage: ServiceUsage, operation: str):
        from vibeinsight.retry import metered_call

        return metered_call(fn, usage, _gemini_error, self.attempts, AnalysisFailed,
                            operation=operation)


def _gemini_error(exc: Exception) -> Exception:
    import httpx
    from google.genai import errors

    from vibeinsight.retry import Transient, parse_retry_after

    if isinstance(exc, (httpx.TimeoutException, httpx.TransportError)):
        return Transient(f"Gemini: {exc}")
    if isinstance(exc, errors.APIError):
        code = exc.code or 0
        if code in (429, 408) or code >= 500:
            headers = dict(getattr(exc.response, "headers", None) or {})
            return Transient(f"HTTP {code} {exc.status}: {exc.message}",
                             parse_retry_after(headers) or _retry_delay(exc.details), code)
        if code in (401, 403):
            return AnalysisFailed(f"Gemini refused the credentials (HTTP {code}): {exc.message}", "api_auth")
        return AnalysisFailed(f"Gemini rejected the request (HTTP {code} {exc.status}): {exc.message}",
                              "api_invalid_request")
    return exc


def _retry_delay(details) -> float | None:
    """google.rpc.RetryInfo's retryDelay ("30s") from an error body, when present."""
    try:
        for d in details.get("error", details).get("details", []):
            if d.get("@type", "").endswith("google.rpc.RetryInfo"):
                return float(d["retryDelay"].rstrip("s"))
    except (AttributeError, ValueError, KeyError, TypeError):
        pass
    return None
