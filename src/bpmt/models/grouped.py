"""Several body parts' T1 encoders as one computation (inference only; same function, same weights).

The four limbs have two joints each, so their token grids have the same shape; only their weights
differ. `stack_modules` turns P modules of one structure into one module of that structure whose
linear layers and layer norms hold the P parts' weights side by side: run on a batch of P*B samples
(part-major), sample `p*B + b` meets part p's weights. Every other operation of the layer code
(attention, reshapes, GELU) treats the batch dimension opaquely, so the IIP and vanilla layers run
unchanged — one pass instead of P, the same numbers (up to float rounding).

`PartEncoders` keeps the per-part modules (their parameters are what is trained, saved and loaded)
and builds the stacked copy lazily when it embeds without gradients, rebuilding it whenever a
parameter changes (its storage or version counter).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

STATELESS = (nn.GELU, nn.ReLU, nn.Identity, nn.Dropout)


class GroupedLinear(nn.Module):
    """P linear layers: input `(P*B, ..., in)` part-major -> `(P*B, ..., out)`."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.parts = len(layers)
        self.weight_t = torch.stack([layer.weight.detach().t() for layer in layers])          # (P, in, out)
        self.bias = (torch.stack([layer.bias.detach() for layer in layers])[:, None]         # (P, 1, out)
                     if layers[0].bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(self.parts, -1, shape[-1])                                         # (P, B*..., in)
        out = torch.bmm(flat, self.weight_t) if self.bias is None else torch.baddbmm(self.bias, flat, self.weight_t)
        return out.view(*shape[:-1], out.shape[-1])


class GroupedLayerNorm(nn.Module):
    """P layer norms over the last dimension, each with its own affine weights."""

    def __init__(self, norms: list[nn.LayerNorm]):
        super().__init__()
        self.parts, self.eps, self.shape = len(norms), norms[0].eps, norms[0].normalized_shape
        self.weight = torch.stack([n.weight.detach() for n in norms])[:, None]             # (P, 1, D)
        self.bias = torch.stack([n.bias.detach() for n in norms])[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        normed = F.layer_norm(x, self.shape, eps=self.eps).reshape(self.parts, -1, shape[-1])
        return torch.addcmul(self.bias, normed, self.weight).view(shape)


def stack_modules(modules: list[nn.Module]) -> nn.Module:
    """One module of the modules' common structure holding all their weights (see the module doc)."""
    first = modules[0]
    if any(type(m) is not type(first) for m in modules):
        raise TypeError(f"cannot stack modules of different types: {sorted({type(m).__name__ for m in modules})}")
    if isinstance(first, nn.Linear):
        return GroupedLinear(modules)
    if isinstance(first, nn.LayerNorm):
        return GroupedLayerNorm(modules)
    if isinstance(first, STATELESS):
        return first
    if first._parameters or first._buffers:
        raise TypeError(f"cannot stack {type(first).__name__}: it holds its own tensors")
    clone = copy.copy(first)                           # attributes (heads, axis, ...) shared, children replaced
    clone._modules = {name: stack_modules([m._modules[name] for m in modules]) for name in first._modules}
    return clone


def parameter_key(parameters: list[nn.Parameter]) -> tuple:
    """Changes whenever one of `parameters` is moved (`.to()`, a new storage) or updated in place
    (optimizer steps, `load_state_dict`)."""
    return tuple((p.data_ptr(), p._version) for p in parameters)
