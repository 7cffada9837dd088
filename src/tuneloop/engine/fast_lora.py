"""A faster forward for peft's LoRA linear layers while training.

peft computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: three matmuls, then a multiply and an
add that each pass over the whole (tokens x out_features) output. Here the scale and the add go into
the last matmul (`addmm(base, x @ A.T, B.T, alpha=scaling)`), which saves those two passes per layer
and direction. Same parameters, same module tree (save/load/merge untouched), same result to float
rounding. Layers with dropout, DoRA, several adapters or a merged state keep peft's own forward.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def _fast_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    a, b = self.lora_A["default"].weight, self.lora_B["default"].weight   # (r, in), (out, r)
    if args or kwargs or self.merged or self.disable_adapters or list(self.active_adapters) != ["default"] or (
            a.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type)):  # peft casts mixed dtypes itself
        return self._peft_forward(x, *args, **kwargs)
    base = self.base_layer
    flat = x.reshape(-1, x.shape[-1])
    out = F.linear(flat, base.weight, base.bias)                          # (N, out)
    out = torch.addmm(out, flat @ a.t(), b.t(), alpha=self.scaling["default"])
    return out.view(*x.shape[:-1], out.shape[-1])


def speed_up_lora(model: Any) -> int:
    """Give every eligible LoRA linear layer the fused forward; returns how many were changed."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    changed = 0
    for module in model.modules():
        if not isinstance(module, LoraLinear) or not isinstance(module.base_layer, torch.nn.Linear):
            continue
        if set(module.lora_A) != {"default"} or module.lora_variant or module.use_dora.get("default"):
            continue
        if not isinstance(module.lora_dropout["default"], torch.nn.Identity):
            continue
        module._peft_forward = module.forward
        module.forward = types.MethodType(_fast_forward, module)
        changed += 1
    return changed
