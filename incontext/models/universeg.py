"""UniverSeg (Butoi et al., ICCV 2023) with a fast cross-convolution.

The architecture and parameter names match the published v1 release, so its
state dict loads with ``strict=True``. The forward pass differs only in how it
computes the same numbers:

* A cross-conv over ``[query ‖ support_i]`` is linear, so its weight is split
  into a query part and a support part. The query part runs once per query and
  is broadcast-added to the support part of each entry; the query features are
  never repeated ``S`` times.
* The support output of the last decoder block is never used, so that block
  only needs the *mean* support interaction, which (by linearity) is the
  support-part convolution of the mean support features.

Shapes: ``B`` batch, ``S`` support size, ``C`` channels, ``H, W`` pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class UniverSegConfig:
    """Architecture of a UniverSeg network.

    ``encoder_widths[i]`` is the feature count of encoder block ``i`` (cross and
    conv features are equal, as in v1). Decoder widths default to the encoder
    widths reversed without their last entry. ``resolution`` is the square input
    size the network was trained at (inference resizes to it).
    """

    encoder_widths: tuple[int, ...] = (64, 64, 64, 64)
    decoder_widths: tuple[int, ...] | None = None
    query_channels: int = 1
    support_channels: int = 2
    resolution: int = 128
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_widths", tuple(int(w) for w in self.encoder_widths))
        if self.decoder_widths is None:
            object.__setattr__(self, "decoder_widths", tuple(self.encoder_widths[-2::-1]))
        else:
            object.__setattr__(self, "decoder_widths", tuple(int(w) for w in self.decoder_widths))
        if len(self.encoder_widths) < 1:
            raise ValueError("UniverSegConfig: encoder_widths needs at least one block")
        if len(self.decoder_widths) != len(self.encoder_widths) - 1:
            raise ValueError(
                "UniverSegConfig: decoder_widths needs one entry per skip connection "
                f"({len(self.encoder_widths) - 1}), got {len(self.decoder_widths)}"
            )
        if self.resolution % self.size_multiple:
            raise ValueError(
                f"UniverSegConfig: resolution {self.resolution} is not divisible by "
                f"{self.size_multiple} (2 ** (number of encoder blocks - 1))"
            )

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.encoder_widths) - 1)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["encoder_widths"] = list(self.encoder_widths)
        data["decoder_widths"] = list(self.decoder_widths or ())
        return data

    @classmethod
    def from_dict(cls, data: dict) -> UniverSegConfig:
        known = {"encoder_widths", "decoder_widths", "query_channels", "support_channels",
                 "resolution", "extra"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"UniverSegConfig: unknown keys {sorted(unknown)}")
        return cls(**data)


def _init_conv(conv: nn.Conv2d, nonlinearity: str) -> None:
    nn.init.kaiming_normal_(conv.weight, nonlinearity=nonlinearity)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvOp(nn.Module):
    """Conv2d (same padding) optionally followed by LeakyReLU(0.01). (N,Cin,H,W)->(N,Cout,H,W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 activation: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.activation = activation
        _init_conv(self.conv, "leaky_relu" if activation else "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        # in place is safe: a convolution's backward needs its input, not its output
        return F.leaky_relu(x, LEAKY_SLOPE, inplace=True) if self.activation else x


class Vmap(nn.Module):
    """Applies a module to every support entry: (B,S,C,H,W) -> (B,S,C',H,W)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.vmapped = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[:2]
        y = self.vmapped(x.flatten(0, 1))
        return y.unflatten(0, (b, s))


def _conv_parts(parts: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None,
                padding) -> torch.Tensor:
    """conv2d(cat(parts, dim=1), weight) without building the concatenation."""
    out, start = None, 0
    for part in parts:
        stop = start + part.shape[1]
        y = F.conv2d(part, weight[:, start:stop], bias if out is None else None, padding=padding)
        out = y if out is None else out.add_(y) if not torch.is_grad_enabled() else out + y
        start = stop
    return out


def _entry_mean(x: torch.Tensor, support_size: int) -> torch.Tensor:
    """Mean over support entries: (B*S,C,H,W) -> (B,C,H,W), channels-last.

    Reduces a (B, S, H*W*C) view of the channels-last memory; the same mean taken on the
    5-D (B,S,C,H,W) view is an order of magnitude slower on CPU (strided reduction).
    """
    bs, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(bs // support_size, support_size, h * w * c)
    return flat.mean(dim=1).reshape(-1, h, w, c).permute(0, 3, 1, 2)


class CrossConv2d(nn.Conv2d):
    """3x3 convolution of every (query, support_i) channel concatenation.

    The weight has shape ``(out, Cq + Cs, 3, 3)``; its first ``Cq`` input channels
    act on the query. ``forward(query_parts, support_parts, S)`` takes the query
    as channel blocks of shape (B,*,H,W) and the support as channel blocks of
    shape (B*S,*,H,W) (entries flattened into the batch). It returns the mean
    over entries ``(B,out,H,W)`` and, unless ``mean_only``, the per-entry
    interactions ``(B*S,out,H,W)``.
    """

    def __init__(self, query_channels: int, support_channels: int, out_channels: int,
                 kernel_size: int = 3) -> None:
        super().__init__(query_channels + support_channels, out_channels, kernel_size,
                         padding=kernel_size // 2)
        self.query_channels = query_channels
        _init_conv(self, "linear")

    def forward(  # type: ignore[override]
        self, query: list[torch.Tensor], support: list[torch.Tensor], support_size: int,
        mean_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cq = self.query_channels
        w_query, w_support = self.weight[:, :cq], self.weight[:, cq:]
        query_part = _conv_parts(query, w_query, self.bias, self.padding)  # (B,out,H,W)
        if mean_only:
            means = [_entry_mean(p, support_size) for p in support]
            return query_part + _conv_parts(means, w_support, None, self.padding), None
        support_part = _conv_parts(support, w_support, None, self.padding)  # (B*S,out,H,W)
        pairs5 = support_part.unflatten(0, (-1, support_size))
        if torch.is_grad_enabled():
            pairs5 = pairs5 + query_part.unsqueeze(1)
        else:
            pairs5.add_(query_part.unsqueeze(1))
        pairs = pairs5.flatten(0, 1)
        return _entry_mean(pairs, support_size), pairs


class CrossOp(nn.Module):
    """Holds the cross-convolution (named as in the v1 state dict)."""

    def __init__(self, query_channels: int, support_channels: int, out_channels: int) -> None:
        super().__init__()
        self.cross_conv = CrossConv2d(query_channels, support_channels, out_channels)

    def forward(self, query, support, support_size: int, mean_only: bool = False):
        return self.cross_conv(query, support, support_size, mean_only=mean_only)


class CrossBlock(nn.Module):
    """Cross-conv interaction, then a conv+LeakyReLU for the query and one for the support.

    query parts (B,*,H,W), support parts (B*S,*,H,W) -> query (B,F,H,W),
    support (B*S,F,H,W) (``None`` when ``query_only``: the caller does not need it).
    """

    def __init__(self, query_channels: int, support_channels: int, width: int) -> None:
        super().__init__()
        self.cross = CrossOp(query_channels, support_channels, width)
        self.target = Vmap(ConvOp(width, width))
        self.support = Vmap(ConvOp(width, width))

    def forward(self, query, support, support_size: int, query_only: bool = False):
        query, pairs = self.cross(query, support, support_size, mean_only=query_only)
        query = self.target.vmapped(query)
        support_out = None if pairs is None else self.support.vmapped(pairs)
        return query, support_out


class UniverSeg(nn.Module):
    """In-context segmentation network.

    ``forward(target_image (B,1,H,W), support_images (B,S,1,H,W),
    support_labels (B,S,1,H,W)) -> logits (B,1,H,W)``; H and W must be
    divisible by ``config.size_multiple``. Internally the support entries are
    flattened into the batch and features are kept channels-last, which the
    CPU convolution kernels prefer.
    """

    def __init__(self, config: UniverSegConfig | None = None, **overrides) -> None:
        super().__init__()
        if config is None:
            config = UniverSegConfig(**overrides)
        elif overrides:
            raise TypeError("UniverSeg: pass either a config or keyword overrides, not both")
        self.config = config
        enc, dec = config.encoder_widths, config.decoder_widths or ()
        self.enc_blocks = nn.ModuleList()
        q_ch, s_ch = config.query_channels, config.support_channels
        skips: list[int] = []
        for width in enc:
            self.enc_blocks.append(CrossBlock(q_ch, s_ch, width))
            q_ch = s_ch = width
            skips.append(width)
        skips.pop()  # the deepest block has no skip connection
        self.dec_blocks = nn.ModuleList()
        for width in dec:
            skip = skips.pop()
            self.dec_blocks.append(CrossBlock(q_ch + skip, s_ch + skip, width))
            q_ch = s_ch = width
        self.out_conv = ConvOp(q_ch, 1, kernel_size=1, activation=False)

    def forward(self, target_image: torch.Tensor, support_images: torch.Tensor,
                support_labels: torch.Tensor) -> torch.Tensor:
        self._check_inputs(target_image, support_images, support_labels)
        cl = torch.channels_last
        s = support_images.shape[1]
        query = target_image.contiguous(memory_format=cl)
        support = torch.cat([support_images, support_labels], dim=2).flatten(0, 1)
        support = support.contiguous(memory_format=cl)
        query_parts, support_parts = [query], [support]
        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        n_enc = len(self.enc_blocks)
        for i, block in enumerate(self.enc_blocks):
            last_block = i == n_enc - 1 and not self.dec_blocks
            query, support = block(query_parts, support_parts, s, query_only=last_block)
            if i == n_enc - 1:
                break
            skips.append((query, support))
            query_parts = [F.max_pool2d(query, 2)]
            support_parts = [F.max_pool2d(support, 2)]
        for j, block in enumerate(self.dec_blocks):
            query_skip, support_skip = skips.pop()
            query_parts = [_upsample(query), query_skip]
            support_parts = [_upsample(support), support_skip]
            last_block = j == len(self.dec_blocks) - 1
            query, support = block(query_parts, support_parts, s, query_only=last_block)
        return self.out_conv(query).contiguous()

    def _check_inputs(self, target: torch.Tensor, images: torch.Tensor,
                      labels: torch.Tensor) -> None:
        cfg = self.config
        if target.ndim != 4 or images.ndim != 5 or labels.ndim != 5:
            raise ValueError(
                "UniverSeg expects target (B,1,H,W), support_images (B,S,1,H,W), "
                f"support_labels (B,S,1,H,W); got {tuple(target.shape)}, "
                f"{tuple(images.shape)}, {tuple(labels.shape)}"
            )
        if images.shape != labels.shape:
            raise ValueError(f"support_images {tuple(images.shape)} and support_labels "
                             f"{tuple(labels.shape)} differ in shape")
        if images.shape[1] == 0:
            raise ValueError("UniverSeg: the support set is empty (S = 0)")
        if target.shape[0] != images.shape[0] or target.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"target {tuple(target.shape)} and support {tuple(images.shape)} "
                             "disagree in batch size or H, W")
        if images.shape[2] + labels.shape[2] != cfg.support_channels or \
                target.shape[1] != cfg.query_channels:
            raise ValueError("UniverSeg: channel counts do not match the configuration")
        h, w = target.shape[-2:]
        m = cfg.size_multiple
        if h % m or w % m:
            raise ValueError(f"UniverSeg: H and W ({h}, {w}) must be divisible by {m}")


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pairwise_forward(model: UniverSeg, target_image: torch.Tensor,
                     support_images: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
    """The literal published computation (reference oracle and benchmark baseline).

    Repeats the query features once per support entry, concatenates them with the
    support features and runs the full cross-conv on every pair; every block
    computes its support output, used or not. Same parameters, same result as
    ``model(...)`` up to float rounding.
    """
    query = target_image.unsqueeze(1)  # (B,1,C,H,W)
    support = torch.cat([support_images, support_labels], dim=2)

    def block_forward(block: CrossBlock, q: torch.Tensor, s: torch.Tensor):
        b, n = s.shape[:2]
        pairs = torch.cat([q.expand(b, n, *q.shape[2:]), s], dim=2)
        conv = block.cross.cross_conv
        inter = F.conv2d(pairs.flatten(0, 1), conv.weight, conv.bias, padding=conv.padding)
        inter = inter.unflatten(0, (b, n))
        new_q = inter.mean(dim=1, keepdim=True)
        return block.target(new_q), block.support(inter)

    def vmap(fn, x):
        return fn(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    skips = []
    for i, block in enumerate(model.enc_blocks):
        query, support = block_forward(block, query, support)
        if i == len(model.enc_blocks) - 1:
            break
        skips.append((query, support))
        query = vmap(lambda t: F.max_pool2d(t, 2), query)
        support = vmap(lambda t: F.max_pool2d(t, 2), support)
    for block in model.dec_blocks:
        q_skip, s_skip = skips.pop()
        query = torch.cat([vmap(_upsample, query), q_skip], dim=2)
        support = torch.cat([vmap(_upsample, support), s_skip], dim=2)
        query, support = block_forward(block, query, support)
    return model.out_conv(query.squeeze(1))

