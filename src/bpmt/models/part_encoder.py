"""T1, the modality encoder: one body part's joints -> tokens -> grid transformer -> reduced features.

Per part (modality): a tokenizer embeds each joint's channels over `frames_per_token` frames
(a temporal patch) into one token, adds a joint embedding and a sinusoidal time encoding, and
swaps masked-out tokens for a learned mask token. A grid transformer with S = the part's joints
(IIP or vanilla layers) runs on the tokens plus the part's class token, and the seed's extra FC
layers reduce the width. Tokenizers are always per part (modality-specific, as in OmniVec2);
the transformer and FC layers are shared across parts or separate, by config.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..skeleton import Partition
from .grouped import parameter_key, stack_modules
from .stack import GridTransformer


@dataclass
class PartGroup:
    """Parts with equally many joints, their T1 weights stacked (`grouped.stack_modules`)."""
    parts: list[str]
    proj: nn.Module
    joint_embed: torch.Tensor    # (P, J, D)
    cls: torch.Tensor            # (P, D)
    transformer: nn.Module
    reducer: nn.Module


@dataclass
class PartFeatures:
    tokens: torch.Tensor     # (B, J_p, Tt, D) per joint and time step
    cls: torch.Tensor        # (B, D) the part's class token
    hidden: torch.Tensor     # (B, J_p, Tt) True = padded or masked-out token


def time_encoding(steps: int, dim: int, device=None) -> torch.Tensor:
    """Sinusoidal encoding `(steps, dim)`; works for any sequence length at test time.

    Eager calls share one cached, read-only table per (steps, dim, device) — a constant of every
    forward pass, built outside inference mode so that a table first made while embedding serves
    training too. Traced or compiled calls (ONNX export) build it afresh, so that the exported
    graph keeps the length symbolic.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or not isinstance(steps, int):
        return _time_encoding(steps, dim, device)
    return _cached_time_encoding(steps, dim, device)


def _time_encoding(steps, dim: int, device=None) -> torch.Tensor:
    position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(steps, dim, device=device)
    enc[:, 0::2] = torch.sin(position * freq)
    enc[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return enc


@functools.lru_cache(maxsize=64)
def _cached_time_encoding(steps: int, dim: int, device=None) -> torch.Tensor:
    with torch.inference_mode(False):
        return _time_encoding(steps, dim, device)


def token_padding(padding_mask: torch.Tensor, frames_per_token: int) -> torch.Tensor:
    """Frame padding `(B, T)` -> time-step padding `(B, T / frames_per_token)` (all frames padded)."""
    B, T = padding_mask.shape
    return padding_mask.view(B, T // frames_per_token, frames_per_token).all(dim=-1)


def patchify(values: torch.Tensor, frames_per_token: int) -> torch.Tensor:
    """Per-joint temporal patches: `(B, T, J, C)` -> `(B, J, T / p, p * C)`, frames in time order."""
    B, T, J, C = values.shape
    p = frames_per_token
    if T % p:
        raise ValueError(f"sequence length {T} is not a multiple of frames_per_token={p}")
    return values.view(B, T // p, p, J, C).permute(0, 3, 1, 2, 4).reshape(B, J, T // p, p * C)


class PartTokenizer(nn.Module):
    def __init__(self, num_joints: int, in_channels: int, frames_per_token: int, dim: int):
        super().__init__()
        self.frames_per_token = frames_per_token
        self.proj = nn.Sequential(nn.Linear(in_channels * frames_per_token, dim), nn.GELU(), nn.Linear(dim, dim))
        self.joint_embed = nn.Parameter(torch.randn(num_joints, dim) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor,
                token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features `(B, T, J_p, C)`, padding_mask `(B, T)`, token_mask `(B, J_p, Tt)` True = masked out
        -> tokens `(B, J_p, Tt, D)`, hidden `(B, J_p, Tt)`."""
        B, T, J, _ = features.shape
        p = self.frames_per_token
        tokens = self.proj(patchify(features, p))                                     # (B, J, Tt, D)
        if token_mask is not None:
            tokens = torch.where(token_mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + self.joint_embed[None, :, None, :] + time_encoding(T // p, tokens.shape[-1], tokens.device)[None, None]
        hidden = token_padding(padding_mask, p)[:, None, :].expand(B, J, T // p)     # (B, J, Tt)
        if token_mask is not None:
            hidden = hidden | token_mask
        return tokens, hidden


def reduce_mlp(dim: int, dims: list[int]) -> nn.Module:
    """The seed's "additional FC layers to reduce dimension" (Identity when `dims` is empty)."""
    if not dims:
        return nn.Identity()
    layers: list[nn.Module] = []
    for i, d in enumerate(dims):
        layers.append(nn.Linear(dim if i == 0 else dims[i - 1], d))
        if i < len(dims) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.LayerNorm(dims[-1]))


class PartEncoders(nn.Module):
    """The bank of T1 encoders, one modality per body part."""

    def __init__(self, partition: Partition, in_channels: int, *, layer: str, dim: int, heads: int,
                 depth: int, ffn_ratio: float, dropout: float, frames_per_token: int, shared: bool,
                 reduce_dims: list[int]):
        super().__init__()
        self.parts = list(partition)
        self.joints = {part: list(joints) for part, joints in partition.items()}
        self.frames_per_token = frames_per_token
        self.out_dim = reduce_dims[-1] if reduce_dims else dim
        self.tokenizers = nn.ModuleDict({part: PartTokenizer(len(j), in_channels, frames_per_token, dim)
                                         for part, j in self.joints.items()})
        self.cls_tokens = nn.Parameter(torch.randn(len(self.parts), dim) * 0.02)
        copies = 1 if shared else len(self.parts)
        self.transformers = nn.ModuleList(GridTransformer(layer, depth, dim, heads, ffn_ratio, dropout)
                                          for _ in range(copies))
        self.reducers = nn.ModuleList(reduce_mlp(dim, reduce_dims) for _ in range(copies))
        self._slot = {part: 0 if shared else i for i, part in enumerate(self.parts)}

    def forward_part(self, part: str, features: torch.Tensor, padding_mask: torch.Tensor,
                     token_mask: torch.Tensor | None = None) -> PartFeatures:
        """features `(B, T, J_p, C)` of one part -> its `PartFeatures`."""
        B = features.shape[0]
        tokens, hidden = self.tokenizers[part](features, padding_mask, token_mask)    # (B, J_p, Tt, D)
        cls = self.cls_tokens[self.parts.index(part)].expand(B, -1)                    # (B, D)
        slot = self._slot[part]
        tokens, cls = self.transformers[slot](tokens, cls, hidden)
        reduce = self.reducers[slot]
        return PartFeatures(reduce(tokens), reduce(cls), hidden)

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor,
                token_masks: dict[str, torch.Tensor] | None = None) -> dict[str, PartFeatures]:
        """features `(B, T, 17, C)` of the whole body -> `{part: PartFeatures}`.

        Embedding without gradients, the parts with equally many joints (the four limbs) run as
        one computation (models/grouped.py); training runs each part's own modules."""
        if token_masks is None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return self.forward_grouped(features, padding_mask)
        return {part: self.forward_part(part, features[:, :, self.joints[part]], padding_mask,
                                        None if token_masks is None else token_masks.get(part))
                for part in self.parts}

    def forward_grouped(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict[str, PartFeatures]:
        """`forward` without token masks, parts of one joint count in one pass (same weights, same function)."""
        B, T = padding_mask.shape
        p = self.frames_per_token
        out: dict[str, PartFeatures] = {}
        for group in self._groups():
            if len(group.parts) == 1:
                part = group.parts[0]
                out[part] = self.forward_part(part, features[:, :, self.joints[part]], padding_mask)
                continue
            P, J = len(group.parts), len(self.joints[group.parts[0]])
            stacked = torch.cat([features[:, :, self.joints[part]] for part in group.parts])   # (P*B, T, J, C)
            tokens = group.proj(patchify(stacked, p))                                     # (P*B, J, Tt, D)
            Tt, D = tokens.shape[2], tokens.shape[3]
            tokens = (tokens.view(P, B, J, Tt, D) + group.joint_embed[:, None, :, None, :]).view(P * B, J, Tt, D)
            tokens = tokens + time_encoding(Tt, D, tokens.device)[None, None]
            hidden = token_padding(padding_mask, p)[:, None, :].expand(B, J, Tt).repeat(P, 1, 1)   # (P*B, J, Tt)
            cls = group.cls[:, None, :].expand(P, B, D).reshape(P * B, D)
            tokens, cls = group.transformer(tokens, cls, hidden)
            tokens, cls = group.reducer(tokens), group.reducer(cls)
            for i, part in enumerate(group.parts):
                rows = slice(i * B, (i + 1) * B)
                out[part] = PartFeatures(tokens[rows], cls[rows], hidden[rows])
        return {part: out[part] for part in self.parts}

    def _groups(self) -> list[PartGroup]:
        """The parts grouped by joint count, each group's weights stacked; rebuilt when a parameter changes."""
        if "_parameter_list" not in self.__dict__:             # plain attributes: never in the state dict
            self.__dict__["_parameter_list"] = list(self.parameters())
        key = parameter_key(self.__dict__["_parameter_list"])
        cached = self.__dict__.get("_grouped")
        if cached is None or cached[0] != key:
            by_size: dict[int, list[str]] = {}
            for part in self.parts:
                by_size.setdefault(len(self.joints[part]), []).append(part)
            groups = []
            with torch.no_grad():
                for parts in by_size.values():
                    tokenizers = [self.tokenizers[part] for part in parts]
                    groups.append(PartGroup(
                        parts=parts,
                        proj=stack_modules([t.proj for t in tokenizers]),
                        joint_embed=torch.stack([t.joint_embed for t in tokenizers]),            # (P, J, D)
                        cls=self.cls_tokens[[self.parts.index(part) for part in parts]],         # (P, D)
                        transformer=stack_modules([self.transformers[self._slot[part]] for part in parts]),
                        reducer=stack_modules([self.reducers[self._slot[part]] for part in parts])))
            self.__dict__["_grouped"] = (key, groups)
        return self.__dict__["_grouped"][1]
