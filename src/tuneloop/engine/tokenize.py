"""Turn records into token ids and loss labels with the model's own chat template.

The loss covers assistant answers only (honouring `weight: 0`) unless `train_on="all"`. Spans are
found on the rendered text: each assistant answer is what rendering one more message appends
after the generation prompt, so any template whose renders extend each other works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneloop.data.records import LabelledRecord, Message, Record

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    """Same length as input_ids; IGNORE where no loss is taken."""

    @property
    def n_target_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def classification_messages(text: str, labels: list[str], answer: str | None = None) -> list[dict[str, str]]:
    """The prompt that asks a chat model for one label (and, for training, the label as its answer)."""
    messages = [{"role": "system", "content": "Classify the user's message. Answer with exactly one of: "
                 + ", ".join(labels) + "."},
                {"role": "user", "content": text}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def record_messages(record: Record, label_set: list[str] | None = None) -> list[dict[str, Any]]:
    """Plain message dicts; labelled records become a classification prompt with the label answer."""
    if isinstance(record, LabelledRecord) and label_set is not None:
        return classification_messages(record.text, label_set, ", ".join(record.labels))
    return [_plain(m) for m in record.to_messages()]


def _plain(message: Message) -> dict[str, Any]:
    out = {"role": message.role, "content": message.content}
    if message.weight is not None:
        out["weight"] = message.weight
    return out


def _render(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans of the assistant answers to learn."""
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight") == 0:
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise ValueError("the chat template does not render conversations as extensions of each other; "
                             "use train_on: all for this model")
        answer = upto[len(prefix):]
        spans.append((len(prefix), len(prefix) + len(answer.rstrip("\n"))))
    return full, spans


def tokenize_messages(tokenizer: Any, messages: list[dict[str, Any]], max_length: int,
                      train_on: str = "assistant") -> Example:
    """Token ids and labels (already aligned with the ids; the model shifts them)."""
    if getattr(tokenizer, "chat_template", None):
        text, spans = assistant_spans(tokenizer, messages)
    else:  # no template: plain text, the last message is the answer
        prompt = "\n".join(m["content"] for m in messages[:-1])
        text = f"{prompt}\n{messages[-1]['content']}{tokenizer.eos_token or ''}"
        spans = [(len(prompt) + 1, len(text))]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                        max_length=max_length)
    ids = encoded["input_ids"]
    if train_on == "all":
        return Example(ids, list(ids))
    labels = [IGNORE] * len(ids)
    for t, (start, end) in enumerate(encoded["offset_mapping"]):
        if any(s <= start < e for s, e in spans):
            labels[t] = ids[t]
    # tokens after the last target change no loss (attention is causal): do not compute them
    last = max((t for t, label in enumerate(labels) if label != IGNORE), default=len(ids) - 1)
    return Example(ids[: last + 1], labels[: last + 1])


def tokenize_records(tokenizer: Any, records: list[Record], max_length: int, train_on: str = "assistant",
                     label_set: list[str] | None = None) -> tuple[list[Example], int]:
    """Examples with at least one target token, and how many records were dropped for having none."""
    examples, dropped = [], 0
    for record in records:
        example = tokenize_messages(tokenizer, record_messages(record, label_set), max_length, train_on)
        if example.n_target_tokens == 0:
            dropped += 1
            continue
        examples.append(example)
    return examples, dropped
