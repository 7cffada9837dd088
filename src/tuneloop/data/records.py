"""The one internal record model every data format converts to and from.

A record keeps the shape it came in (`kind`), so writing it back to its own format is lossless,
and every kind can be viewed as a chat (`to_messages`) for training and token counting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

ROLES = ("system", "developer", "user", "assistant", "tool")
Role = Literal["system", "developer", "user", "assistant", "tool"]


class Message(BaseModel):
    """One chat message. Extra keys (name, tool_calls, ...) are kept as they came."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str
    weight: Literal[0, 1] | None = None
    """OpenAI's per-message weight: 0 means do not learn from this assistant message."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extra: dict[str, Any] = Field(default_factory=dict)
    """Keys of the source object this format does not interpret, written back unchanged."""


class ChatRecord(_Base):
    """OpenAI chat format: `{"messages": [...]}`."""

    kind: Literal["chat"] = "chat"
    messages: list[Message]

    def to_messages(self) -> list[Message]:
        return list(self.messages)


class PromptRecord(_Base):
    """A prompt for online RL (grpo, reinforcement jobs): a chat whose last message is the user's, with any other
    fields kept in `extra`, where graders read them (`{{ item.team }}`)."""

    kind: Literal["prompt"] = "prompt"
    messages: list[Message]

    def to_messages(self) -> list[Message]:
        return list(self.messages)

    def item(self) -> dict[str, Any]:
        """The data line as graders see it: its fields and its messages."""
        return {**self.extra, "messages": [m.model_dump(exclude_none=True) for m in self.messages]}


class CompletionRecord(_Base):
    """Prompt/completion: `{"prompt": ..., "completion": ...}`."""

    kind: Literal["completion"] = "completion"
    prompt: str
    completion: str

    def to_messages(self) -> list[Message]:
        return [Message(role="user", content=self.prompt), Message(role="assistant", content=self.completion)]


class InstructionRecord(_Base):
    """Alpaca: `{"instruction": ..., "input": ..., "output": ...}`."""

    kind: Literal["instruction"] = "instruction"
    instruction: str
    input: str = ""
    output: str

    def to_messages(self) -> list[Message]:
        prompt = f"{self.instruction}\n\n{self.input}" if self.input else self.instruction
        return [Message(role="user", content=prompt), Message(role="assistant", content=self.output)]


class PreferenceRecord(_Base):
    """A prompt with a preferred and a non-preferred answer (OpenAI DPO or prompt/chosen/rejected)."""

    kind: Literal["preference"] = "preference"
    messages: list[Message]
    """The prompt, as a conversation."""
    chosen: list[Message]
    rejected: list[Message]
    text_form: bool = False
    """True when prompt/chosen/rejected came as plain strings; they are written back as strings."""

    def to_messages(self) -> list[Message]:
        return [*self.messages, *self.chosen]


class UnpairedRecord(_Base):
    """One answer marked desirable or not (KTO's data): `{"prompt": ..., "completion": ..., "label": true|false}`, the
    prompt and completion as strings or lists of messages."""

    kind: Literal["unpaired"] = "unpaired"
    messages: list[Message]
    """The prompt, as a conversation."""
    completion: list[Message]
    label: bool
    """True: a desirable answer; False: an undesirable one."""
    text_form: bool = False

    def to_messages(self) -> list[Message]:
        return [*self.messages, *self.completion]


class LabelledRecord(_Base):
    """Labelled text: `{"text": ..., "label": ...}` or `{"text": ..., "labels": [...]}`."""

    kind: Literal["labelled"] = "labelled"
    text: str
    labels: list[str]
    multi_label: bool = False

    def to_messages(self) -> list[Message]:
        return [Message(role="user", content=self.text), Message(role="assistant", content=", ".join(self.labels))]


class Span(BaseModel):
    """One labelled stretch of a text: characters `start` (included) to `end` (excluded), as Python slices."""

    model_config = ConfigDict(extra="forbid")

    start: int
    end: int
    label: str


class SpanRecord(_Base):
    """Text with labelled spans (named entities): `{"text": ..., "spans": [{"start", "end", "label"}, ...]}`,
    character offsets, in text order, never overlapping."""

    kind: Literal["spans"] = "spans"
    text: str
    spans: list[Span]

    def to_messages(self) -> list[Message]:
        """As a chat (token counts; a chat model learning to list the entities): one `label: text` line each."""
        found = "\n".join(f"{s.label}: {self.text[s.start:s.end]}" for s in self.spans) or "none"
        return [Message(role="user", content=self.text), Message(role="assistant", content=found)]


Record = Annotated[
    Union[ChatRecord, PromptRecord, CompletionRecord, InstructionRecord, PreferenceRecord, UnpairedRecord,
          LabelledRecord, SpanRecord],
    Field(discriminator="kind"),
]
"""Any record. Parse stored records with `RecordAdapter.validate_json`."""

from pydantic import TypeAdapter  # noqa: E402

RecordAdapter: TypeAdapter[Record] = TypeAdapter(Record)


def record_text(record: Record) -> str:
    """All the text of a record in one string (for hashing, dedup and search)."""
    if isinstance(record, (LabelledRecord, SpanRecord)):
        return record.text
    if isinstance(record, PreferenceRecord):
        parts = [m.content for m in (*record.messages, *record.chosen, *record.rejected)]
        return "\n".join(parts)
    return "\n".join(m.content for m in record.to_messages())
