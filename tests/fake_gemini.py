"""The Gemini API (generativelanguage v1beta) faked at the HTTP layer; the real google-genai SDK calls it.

Shapes as https://ai.google.dev/api/generate-content and /api/tokens document:
POST /v1beta/models/{model}:generateContent → {candidates: [{content: {parts: [{text}], role}, finishReason,
index}], usageMetadata: {promptTokenCount, candidatesTokenCount, totalTokenCount}, modelVersion, responseId};
POST /v1beta/models/{model}:countTokens → {totalTokens}. Errors: {error: {code, message, status}}.
"""

from __future__ import annotations

import json

from tests.fake_openai import FakeServer

INSIGHT = {
    "summary": "予算会議: 来期の予算案を確認し、担当を決めた。",
    "sentiment": {"label": "positive", "score": 0.6},
    "vibe": "落ち着いて前向き",
    "topics": ["予算", "スケジュール"],
    "action_items": [{"text": "予算案を送る", "owner": "田中", "due": "金曜日"}],
    "key_quotes": [{"text": "本日の会議を始めます。", "start": 0.0, "speaker": None}],
}


class FakeGemini(FakeServer):
    def __init__(self, tokens_per_char: float = 0.5):
        super().__init__()
        self.tokens_per_char = tokens_per_char
        self.outputs: list[str] = []  # texts answered before the default INSIGHT

    def record(self, method, path, headers, body) -> dict:
        rec = super().record(method, path, headers, body)
        rec["json"] = json.loads(body or b"{}")
        return rec

    def prompt_text(self, rec: dict) -> str:
        return "".join(p.get("text", "") for c in rec["json"].get("contents", []) for p in c.get("parts", []))

    def handle(self, rec: dict) -> tuple[int, dict, dict]:
        if not rec["headers"].get("x-goog-api-key"):
            return 403, {}, {"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}
        tokens = int(len(self.prompt_text(rec)) * self.tokens_per_char)
        if rec["path"].endswith(":countTokens"):
            return 200, {}, {"totalTokens": tokens}
        if rec["path"].endswith(":generateContent"):
            text = self.outputs.pop(0) if self.outputs else json.dumps(INSIGHT, ensure_ascii=False)
            out_tokens = len(text) // 3
            return 200, {}, {
                "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                                "index": 0}],
                "usageMetadata": {"promptTokenCount": tokens, "candidatesTokenCount": out_tokens,
                                  "totalTokenCount": tokens + out_tokens},
                "modelVersion": rec["path"].split("/models/")[1].split(":")[0], "responseId": "fake-1",
            }
        return 404, {}, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}


def quota_exhausted(delay: str) -> tuple[int, dict, dict]:
    """A 429 whose only wait hint is google.rpc.RetryInfo's retryDelay in the body ("2s"), as Gemini sends it."""
    return 429, {}, {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                               "status": "RESOURCE_EXHAUSTED", "details": [
                                   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}
