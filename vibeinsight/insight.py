"""What the language model returns about a conversation: the response schema sent to Gemini,
validated on return, and the prompt text built from a transcript. No SDK here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from vibeinsight.schemas import Segment


class Sentiment(BaseModel):
    label: Literal["positive", "neutral", "negative", "mixed"]
    score: float = Field(description="-1 (very negative) to 1 (very positive)")


class ActionItem(BaseModel):
    text: str
    owner: str | None = Field(description="who takes it, if said")
    due: str | None = Field(description="when, as said in the conversation")


class KeyQuote(BaseModel):
    text: str = Field(description="verbatim, in the conversation's language")
    start: float = Field(description="seconds from the start, from the [s] marks")
    speaker: str | None


class Insight(BaseModel):
    """Kept free of defaults and numeric bounds: Gemini's response schema is an OpenAPI subset."""

    summary: str
    sentiment: Sentiment
    vibe: str = Field(description="the emotional tone of the conversation, a few words")
    topics: list[str]
    action_items: list[ActionItem]
    key_quotes: list[KeyQuote]

    def clamped(self) -> Insight:
        self.sentiment.score = max(-1.0, min(1.0, self.sentiment.score))
        return self


INSTRUCTIONS = (
    "You analyze a recorded conversation (a meeting or a support call). Each line is "
    "'[start seconds] speaker: text'. Answer in the conversation's own language. Give a short summary, "
    "the overall sentiment (label and a score from -1 to 1), the vibe (the emotional tone in a few words), "
    "the topics, the action items (owner and due date only when said), and up to 5 key quotes copied "
    "verbatim with the start seconds of their line."
)

MERGE_INSTRUCTIONS = (
    "These are analyses of consecutive parts of one conversation, in order. Merge them into one analysis "
    "of the whole conversation: one summary, one sentiment, one vibe, the union of topics without "
    "duplicates, all action items, and the 5 most telling key quotes with their start seconds."
)


def transcript_lines(segments: list[Segment]) -> list[str]:
    return [f"[{s.start:.1f}] {s.speaker or 'speaker'}: {s.text}" for s in segments]


def split_lines(lines: list[str], parts: int) -> list[list[str]]:
    """Consecutive groups of about equal text length (a line is never cut)."""
    if parts <= 1:
        return [lines]
    target = sum(len(x) for x in lines) / parts
    groups: list[list[str]] = [[]]
    size = 0
    for line in lines:
        if size >= target and len(groups) < parts:
            groups.append([])
            size = 0
        groups[-1].append(line)
        size += len(line)
    return [g for g in groups if g]
