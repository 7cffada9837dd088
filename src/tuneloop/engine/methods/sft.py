"""Supervised fine-tuning: next-token cross-entropy on the answer tokens.

The LM head runs only at positions that carry a label: for short answers after long prompts that
skips most of the (vocab x hidden) head, the largest single matmul of a small model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.engine.methods import Defaults, Method, Prepared, register
from tuneloop.engine.tokenize import IGNORE, Example, tokenize_records


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch: input_ids, attention_mask and labels, each (B, T)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def causal_parts(model: Any) -> tuple[Any, Any]:
    """(decoder that returns hidden states, LM head) of a causal LM, under any peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    return decoder, base.get_output_embeddings()


def target_count(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE).sum())


MIN_SHARED_PREFIX = 8
"""Shorter common prefixes are not worth the attention mask that sharing them needs."""
MIN_SHARED_FRACTION = 0.25
"""On a GPU, nor are prefixes under this share of the batch's width: the packing and the attention mask cost
more than the few tokens saved where long rows follow a short system prompt. On a CPU a matmul's cost follows
its rows, so every shared token pays."""


def shared_prefix_length(batch: dict[str, torch.Tensor], min_fraction: float = MIN_SHARED_FRACTION) -> int:
    """How many leading tokens every row of the batch has in common with no target among them (0: none
    worth sharing). Typical SFT data repeats one system prompt: those tokens then run once, not B times."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if ids.shape[0] < 2:
        return 0
    same = ((ids == ids[:1]).all(0) & (mask == 1).all(0)).tolist()
    prefix = same.index(False) if False in same else len(same)
    labelled = (labels != IGNORE).any(0).tolist()
    first_label = labelled.index(True) if True in labelled else len(labelled)
    # position t predicts token t+1: the prefix may not hold the position before a target
    prefix = min(prefix, first_label - 1, ids.shape[1] - 1)
    return prefix if prefix >= max(MIN_SHARED_PREFIX, min_fraction * ids.shape[1]) else 0


def right_padded(mask: torch.Tensor) -> bool:
    """Every row is its tokens, then only padding (what `collate` builds)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


PACKED_ATTENTION = "tuneloop_packed"


@dataclass
class Packed:
    """A micro-batch without its padding: only the positions some target needs, end to end in one row.

    Row r keeps positions start..last-1, where last is its last labelled token (later positions feed no
    target: attention is causal) and start is the shared prefix's length; the prefix, when there is one,
    comes first and runs once for every row. Attention runs in a padded layout (`rows` x `width`) that
    `index` maps each packed token into; everything else runs on the packed tokens alone."""

    ids: torch.Tensor        # (1, N)
    positions: torch.Tensor  # (1, N) each token's position in its own row
    targets: torch.Tensor    # (N,) the token each position predicts, or IGNORE
    index: torch.Tensor      # (N,) slot of each token in the padded attention layout, row * width + column
    rows: int
    width: int
    prefix: int


def pack(batch: dict[str, torch.Tensor], prefix: int) -> Packed:
    """The packed form of a right-padded micro-batch (see `Packed`); prefix: `shared_prefix_length` or 0."""
    ids, labels = batch["input_ids"], batch["labels"]
    columns = torch.arange(ids.shape[1], device=ids.device)
    last = torch.where(labels != IGNORE, columns, -1).max(dim=1).values  # (B,), -1: no target in the row
    keep = (columns >= prefix) & (columns < last[:, None])                # positions that feed a target
    row, column = keep.nonzero(as_tuple=True)
    slot_row, slot_column = row + (1 if prefix else 0), column - prefix
    parts = [ids[keep]], [column], [labels[row, column + 1]]
    width = int((last - prefix).max().clamp(min=0))
    if prefix:
        head = columns[:prefix]
        parts[0].insert(0, ids[0, :prefix])
        parts[1].insert(0, head)
        parts[2].insert(0, torch.full_like(head, IGNORE))
        slot_row, slot_column = torch.cat([torch.zeros_like(head), slot_row]), torch.cat([head, slot_column])
        width = max(width, prefix)
    packed_ids, positions, targets = (torch.cat(p) for p in parts)
    return Packed(packed_ids[None], positions[None], targets, slot_row * width + slot_column,
                  ids.shape[0] + (1 if prefix else 0), width, prefix)


def _packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention over a `Packed` batch: queries, keys and values (1, heads, N, d) are spread into the
    padded layout (rows, heads, width, d), attend there, and the outputs are gathered back to (1, N, heads, d).
    With a shared prefix, row 0 is the prefix (plain causal) and every other row also attends to the
    prefix's keys and values (one copy, expanded, so its gradient sums over the rows)."""
    layout: Packed = kwargs["packed"]
    rows, width, prefix = layout.rows, layout.width, layout.prefix

    def spread(x: torch.Tensor) -> torch.Tensor:
        flat = x[0].transpose(0, 1)  # (N, heads, d)
        padded = flat.new_zeros((rows * width, *flat.shape[1:])).index_copy(0, layout.index, flat)
        return padded.view(rows, width, *flat.shape[1:]).transpose(1, 2)

    q, k, v = spread(query), spread(key), spread(value)
    gqa = q.shape[1] != k.shape[1]
    p = dropout if module.training else 0.0
    if prefix:
        head = F.scaled_dot_product_attention(q[:1], k[:1], v[:1], dropout_p=p, is_causal=True, scale=scaling,
                                              enable_gqa=gqa)
        keys = torch.cat([k[:1, :, :prefix].expand(rows - 1, -1, -1, -1), k[1:]], dim=2)
        values = torch.cat([v[:1, :, :prefix].expand(rows - 1, -1, -1, -1), v[1:]], dim=2)
        visible = torch.ones(width, prefix + width, dtype=torch.bool, device=q.device).tril(diagonal=prefix)
        tails = F.scaled_dot_product_attention(q[1:], keys, values, attn_mask=visible, dropout_p=p, scale=scaling,
                                               enable_gqa=gqa)
        out = torch.cat([head, tails])
    else:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scaling, enable_gqa=gqa)
    out = out.transpose(1, 2)  # (rows, width, heads, d)
    out = out.reshape(rows * width, out.shape[2], out.shape[3])
    return out.index_select(0, layout.index)[None], None


def _register_packed_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if PACKED_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(PACKED_ATTENTION, _packed_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, lambda *args, **kwargs: None)  # built in the call


PRE_NORM_LAYERS = {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer",
                   "SmolLM3DecoderLayer"}
"""Decoder layers whose forward is: residual + attention(norm(x)), then residual + mlp(norm(x)), nothing else."""


def _selected_forward(layer: Any, select: torch.Tensor) -> Any:
    """A forward for a `PRE_NORM_LAYERS` layer that returns only the positions in `select`. Every position's
    keys and values still feed the attention; the MLP (most of a layer) runs on the selected positions alone."""

    def forward(hidden_states: torch.Tensor, attention_mask: Any = None, position_embeddings: Any = None,
                **kwargs: Any) -> torch.Tensor:
        attended, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden_states),
                                      attention_mask=attention_mask, position_embeddings=position_embeddings, **kwargs)
        hidden = hidden_states[:, select] + attended[:, select]
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    return forward


def packed_hidden_states(decoder: Any, layout: Packed, select: torch.Tensor) -> torch.Tensor:
    """Last hidden states (len(select), H) of a `Packed` batch's tokens at the positions `select`, in one
    forward call. Only those positions leave the last layer, so where its class is known (`PRE_NORM_LAYERS`)
    its MLP runs on them alone."""
    _register_packed_attention()
    config = decoder.config
    before = config._attn_implementation
    layers = getattr(decoder, "layers", None)
    last = layers[-1] if layers is not None and type(layers[-1]).__name__ in PRE_NORM_LAYERS else None
    config._attn_implementation = PACKED_ATTENTION
    if last is not None:
        last.forward = _selected_forward(last, select)  # an instance attribute, removed again below
    try:
        hidden = decoder(input_ids=layout.ids, position_ids=layout.positions, use_cache=False,
                         packed=layout).last_hidden_state[0]
    finally:
        config._attn_implementation = before
        if last is not None:
            del last.forward
    return hidden if last is not None else hidden[select]


def hidden_states(decoder: Any, batch: dict[str, torch.Tensor], right: bool = False) -> torch.Tensor:
    """Last hidden states (B, T, H) of a padded micro-batch.

    right: the rows are right-padded (`right_padded`): the causal mask alone then keeps every real token
    from seeing a pad (pads come after it), so the padding mask can go, and attention runs as plain causal
    attention (flash kernels, no (B, T, T) mask built). Pad positions compute garbage that no label reads."""
    mask = None if right else batch["attention_mask"]
    return decoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state


def labelled_logits(model: Any, batch: dict[str, torch.Tensor], share_prefix: bool = True,
                    packed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, V), targets (N,)) at the positions that carry a label, N over the whole batch.

    packed: run the batch packed (`pack`); None: on a CPU, where a matmul's cost follows its rows, and
    wherever a shared prefix runs once. On a GPU the padded batch (rows grouped by length) runs as plain
    causal flash attention, with no spreading and gathering around it."""
    decoder, head = causal_parts(model)
    right = right_padded(batch["attention_mask"])  # packing and the mask-free path both need it
    cpu = batch["input_ids"].device.type == "cpu"
    prefix = shared_prefix_length(batch, 0.0 if cpu else MIN_SHARED_FRACTION) if share_prefix and right else 0
    if packed is None:
        packed = bool(prefix) or cpu
    if packed and right:
        layout = pack(batch, prefix)
        if layout.ids.shape[1]:
            select = (layout.targets != IGNORE).nonzero().squeeze(1)
            return head(packed_hidden_states(decoder, layout, select)).float(), layout.targets[select]
    hidden = hidden_states(decoder, batch, right)[:, :-1]  # (B, T-1, H): position t predicts t+1
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    return head(hidden[keep]).float(), targets[keep]         # the head runs only where there is a label


def sft_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens) for one micro-batch."""
    logits, targets = labelled_logits(model, batch)
    return F.cross_entropy(logits, targets, reduction="sum"), len(targets)


# ---------------------------------------------------------------------- the method
ADAPTER_LEARNING_RATES = {"lora": 2e-4, "dora": 2e-4, "qlora": 2e-4, "ia3": 3e-3, "full": 2e-5, "freeze": 2e-5}
"""Peak learning rates by adapter type: LoRA's usual 2e-4; IA3 scales activations and needs a larger one
(peft's IA3 examples use 3e-3); full and freeze fine-tuning move the base weights themselves, 2e-5."""
TARGET_EPOCHS, MIN_EXAMPLES_SEEN, MAX_EXAMPLES_SEEN, MAX_EPOCHS = 3, 100, 25_000, 25


def scaled_epochs(examples: int, target: int = TARGET_EPOCHS, least: int = MIN_EXAMPLES_SEEN,
                  most: int = MAX_EXAMPLES_SEEN, cap: int = MAX_EPOCHS) -> int:
    """`target` passes, more for small data so that at least `least` examples are seen (up to `cap` passes),
    fewer for large data so that at most about `most` are (at least one pass): OpenAI's `n_epochs: auto`."""
    if examples * target < least:
        return min(cap, -(-least // max(examples, 1)))
    if examples * target > most:
        return max(1, most // examples)
    return target


def epochs_reason(examples: int, epochs: int, target: int, least: int = MIN_EXAMPLES_SEEN,
                  most: int = MAX_EXAMPLES_SEEN) -> str:
    if epochs > target:
        return f"{target} passes, raised so that {least} examples are seen ({examples} in the data)"
    if epochs < target:
        return f"{target} passes, lowered so that at most {most} examples are seen ({examples} in the data)"
    return f"{target} passes"


def generative_defaults(adapter: str, examples: int) -> Defaults:
    epochs = scaled_epochs(examples)
    return Defaults({"learning_rate": ADAPTER_LEARNING_RATES[adapter], "epochs": epochs, "warmup_ratio": 0.03},
                    {"learning_rate": f"for {adapter}", "epochs": epochs_reason(examples, epochs, TARGET_EPOCHS),
                     "warmup_ratio": "3% of the steps"})


def check_generates(recipe: Any, model_kind: str) -> None:
    if model_kind in {"encoder", "classifier", "reward", "token-classifier"}:
        raise ValueError(f"method '{recipe.method}' needs a model that generates text; '{recipe.model}' is an "
                         "encoder or classifier (use method: classify)")


def load_policy(recipe: Any, settings: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
    """The causal LM to train and its tokenizer (with a pad token)."""
    from tuneloop.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(recipe.model, settings, four_bit=four_bit, dtype=dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def tokenize_split(recipe: Any, tokenizer: Any, records: Any, label_set: list[str] | None = None) -> Prepared:
    max_length = recipe.hyperparameters.max_length
    train, dropped = tokenize_records(tokenizer, records.train, max_length, recipe.train_on, label_set)
    validation, _ = tokenize_records(tokenizer, records.validation, max_length, recipe.train_on, label_set)
    if not train:
        raise ValueError("no training example has a token to learn from (answers empty or cut by max_length)")
    return Prepared(train, validation, dropped)


@register("sft")
class SFT(Method):
    """Supervised fine-tuning of a chat or causal model on the answers of conversations (or every token)."""

    name = "sft"
    task_type = "CAUSAL_LM"

    def __init__(self, recipe: Any, model_kind: str):
        check_generates(recipe, model_kind)
        super().__init__(recipe, model_kind)

    def load(self, settings: Any, records: Any, four_bit: bool, dtype: Any) -> tuple[Any, Any]:
        return load_policy(self.recipe, settings, four_bit, dtype)

    def prepare(self, tokenizer: Any, records: Any) -> Prepared:
        return tokenize_split(self.recipe, tokenizer, records)

    def defaults(self, examples: int) -> Defaults:
        return generative_defaults(self.recipe.adapter.type, examples)

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(examples, pad_id)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return sft_loss(model, batch)

    def targets(self, batch: dict[str, torch.Tensor]) -> int:
        return target_count(batch)

    def run_meta(self) -> dict[str, Any]:
        return {"classifier": None, "label_set": None}
