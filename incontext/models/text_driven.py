"""Text-controller dynamic heads: the CLIP-Driven Universal Model (Liu et al., ICCV 2023) in 2D.

A backbone (a 2D U-Net by default) gives the deepest features and the decoder's last
features of an image. For every class ``k`` a controller turns
``[global image feature ‖ class embedding (‖ support feature)]`` into the 153 weights and
biases of a tiny head of 1×1 convolutions (8→8→8→1, ReLU between), which runs on the
decoder features and gives one logit map per class (sigmoid, not softmax). All heads of a
batch run as one grouped convolution (``groups = B * K``).

Hybrid prompts (beyond the original): the controller also receives a feature pooled from
support images inside (and outside) each class's support labels. A class may have text,
support examples or both; what is missing is replaced by a learned "absent" embedding, so
an unnamed structure can be segmented from examples alone.

Shapes: ``B`` batch, ``K`` classes, ``S`` support images, ``D`` text-embedding size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TextDriven",
    "TextDrivenConfig",
    "UNetBackbone",
    "dynamic_head_param_count",
    "dynamic_head_forward",
    "dynamic_head_loop",
    "BACKBONES",
]


def dynamic_head_param_count(channels: int = 8, layers: int = 3) -> int:
    """Weights + biases of a ``layers``-deep head of 1×1 convs ``channels``→…→1 (153 for 8, 3)."""
    if layers < 1:
        raise ValueError("a dynamic head needs at least one layer")
    return (layers - 1) * (channels * channels + channels) + channels + 1


def _split_params(params: torch.Tensor, channels: int, layers: int
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(N, P) controller output -> per layer (weight (N, out, in), bias (N, out))."""
    out, start = [], 0
    for i in range(layers):
        c_out = 1 if i == layers - 1 else channels
        n_w = c_out * channels
        w = params[:, start:start + n_w].reshape(-1, c_out, channels)
        start += n_w
        b = params[:, start:start + c_out]
        start += c_out
        out.append((w, b))
    if start != params.shape[1]:
        raise ValueError(f"controller gave {params.shape[1]} numbers, the head needs {start}")
    return out


def dynamic_head_forward(features: torch.Tensor, params: torch.Tensor, layers: int = 3
                         ) -> torch.Tensor:
    """Run B*K dynamic heads as one grouped convolution.

    features: (B, C, H, W) head input; params: (B, K, P) -> logits (B, K, H, W).
    """
    b, c, h, w = features.shape
    k = params.shape[1]
    x = features[:, None].expand(b, k, c, h, w).reshape(1, b * k * c, h, w)
    for i, (weight, bias) in enumerate(_split_params(params.reshape(b * k, -1), c, layers)):
        x = F.conv2d(x, weight.reshape(-1, c, 1, 1), bias.reshape(-1), groups=b * k)
        if i < layers - 1:
            x = F.relu(x)
    return x.reshape(b, k, h, w)


def dynamic_head_loop(features: torch.Tensor, params: torch.Tensor, layers: int = 3
                      ) -> torch.Tensor:
    """Reference implementation of :func:`dynamic_head_forward`: one head at a time."""
    b, c = features.shape[:2]
    outs = []
    for bi in range(b):
        row = []
        for ki in range(params.shape[1]):
            x = features[bi:bi + 1]
            for i, (weight, bias) in enumerate(_split_params(params[bi, ki:ki + 1], c, layers)):
                x = F.conv2d(x, weight[0][..., None, None], bias[0])
                if i < layers - 1:
                    x = F.relu(x)
            row.append(x[0, 0])
        outs.append(torch.stack(row))
    return torch.stack(outs)


def _groups(channels: int, wanted: int) -> int:
    """Largest divisor of ``channels`` that is <= ``wanted`` (GroupNorm needs a divisor)."""
    return math.gcd(channels, wanted) or 1


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels, groups), channels)


class DoubleConv(nn.Module):
    """(conv3×3 → GroupNorm → ReLU) × 2."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), _norm(c_out, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _norm(c_out, groups),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNetBackbone(nn.Module):
    """A 2D U-Net: (B, C_in, H, W) -> (deepest (B, widths[-1], H/2^n, W/2^n),
    decoder (B, widths[0], H, W))."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], groups: int = 8) -> None:
        super().__init__()
        self.encoder = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoder.append(DoubleConv(c, w, groups))
            c = w
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for w_skip in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c, w_skip, 2, stride=2))
            self.decoder.append(DoubleConv(2 * w_skip, w_skip, groups))
            c = w_skip
        self.deep_channels = widths[-1]
        self.decoder_channels = widths[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        deep = x
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return deep, x


BACKBONES = {"unet": UNetBackbone}


@dataclass(frozen=True)
class TextDrivenConfig:
    """Architecture of a :class:`TextDriven` network.

    ``text_dim`` must match the text encoder (384 minilm, 512 CLIP, any for hashing);
    ``text_encoder`` / ``text_encoder_options`` / ``prompt_template`` record which encoder
    and prompts the model was trained with, so inference embeds class names the same way.
    ``hybrid`` adds the support-feature input to the controller.
    """

    backbone: str = "unet"
    in_channels: int = 1
    widths: tuple[int, ...] = (32, 64, 128, 256)
    norm_groups: int = 16
    resolution: int = 128
    text_dim: int = 384
    embed_dim: int = 256
    head_channels: int = 8
    head_layers: int = 3
    hybrid: bool = True
    text_encoder: str = "hashing"
    text_encoder_options: dict = field(default_factory=dict)
    prompt_template: str = "A {modality} image of a {label}"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.backbone not in BACKBONES:
            raise ValueError(f"TextDrivenConfig: unknown backbone {self.backbone!r} "
                             f"(known: {sorted(BACKBONES)})")
        if not self.widths:
            raise ValueError("TextDrivenConfig: widths needs at least one entry")
        if self.resolution % self.size_multiple:
            raise ValueError(f"TextDrivenConfig: resolution {self.resolution} is not divisible "
                             f"by {self.size_multiple} (2 ** (len(widths) - 1))")
        for name in ("text_dim", "embed_dim", "head_channels", "head_layers", "in_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextDrivenConfig: {name} must be >= 1")

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def head_params(self) -> int:
        return dynamic_head_param_count(self.head_channels, self.head_layers)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TextDrivenConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"TextDrivenConfig: unknown keys {sorted(unknown)}")
        return cls(**data)


def masked_average(features: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked average pooling.

    features (B, S, C, h, w), soft masks (B, S, K, H, W) (resized to h×w by area) ->
    pooled (B, K, C) over all S images, and the mask mass per (B, K).
    """
    b, s, c, h, w = features.shape
    k = masks.shape[2]
    m = masks.float().flatten(0, 1)
    if m.shape[-2:] != (h, w):
        m = F.adaptive_avg_pool2d(m, (h, w))
    m = m.reshape(b, s, k, h * w)
    f = features.reshape(b, s, c, h * w)
    num = torch.einsum("bskp,bscp->bkc", m, f)
    mass = m.sum(dim=(1, 3))
    return num / (mass[..., None] + eps), mass


class TextDriven(nn.Module):
    """Universal-model-style segmenter with per-class dynamic heads (see module docstring)."""

    def __init__(self, config: TextDrivenConfig | None = None) -> None:
        super().__init__()
        config = config or TextDrivenConfig()
        self.config = config
        e = config.embed_dim
        self.backbone = BACKBONES[config.backbone](config.in_channels, config.widths,
                                                   config.norm_groups)
        deep, dec = self.backbone.deep_channels, self.backbone.decoder_channels
        # global image feature: GN -> ReLU -> GAP -> 1x1 conv
        self.image_norm = _norm(deep, config.norm_groups)
        self.image_proj = nn.Conv2d(deep, e, 1)
        # class embedding: Linear -> ReLU
        self.text_proj = nn.Linear(config.text_dim, e)
        self.absent_text = nn.Parameter(torch.zeros(e))
        # head input: GN -> ReLU -> 1x1 conv to head_channels
        self.head_norm = _norm(dec, config.norm_groups)
        self.head_proj = nn.Conv2d(dec, config.head_channels, 1)
        n_in = 2 * e
        if config.hybrid:
            self.support_proj = nn.Linear(2 * (deep + dec), e)
            self.absent_support = nn.Parameter(torch.zeros(e))
            n_in += e
        self.controller = nn.Conv2d(n_in, config.head_params, 1)
        nn.init.normal_(self.absent_text, std=0.02)
        if config.hybrid:
            nn.init.normal_(self.absent_support, std=0.02)

    # ------------------------------------------------------------------ pieces
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (normalised deepest features, normalised decoder features)."""
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"TextDriven: images must be (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        m = self.config.size_multiple
        if images.shape[-1] % m or images.shape[-2] % m:
            raise ValueError(f"TextDriven: image size {tuple(images.shape[-2:])} must be "
                             f"divisible by {m}")
        deep, dec = self.backbone(images)
        return F.relu(self.image_norm(deep)), F.relu(self.head_norm(dec))

    def class_embedding(self, text: torch.Tensor | None, batch: int, k: int,
                        present: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """(K, D) or (B, K, D) text embeddings (or None) -> (B, K, E)."""
        absent = self.absent_text.expand(batch, k, -1)
        if text is None:
            return absent
        if text.ndim == 2:
            text = text[None].expand(batch, -1, -1)
        if text.shape[-1] != self.config.text_dim:
            raise ValueError(f"TextDriven: text embeddings have {text.shape[-1]} dims, the model "
                             f"expects {self.config.text_dim} ({self.config.text_encoder})")
        emb = F.relu(self.text_proj(text.to(device=device, dtype=self.text_proj.weight.dtype)))
        if present is None:
            return emb
        present = present.to(device).bool()
        if present.ndim == 1:
            present = present[None].expand(batch, -1)
        return torch.where(present[..., None], emb, absent)

    def support_embedding(self, support_images: torch.Tensor | None,
                          support_labels: torch.Tensor | None, batch: int, k: int
                          ) -> torch.Tensor:
        """Support images (B, S, C, H, W), soft labels (B, S, K, H, W) -> (B, K, E).

        A support set with B = 1 is shared by the whole batch: it is encoded once.
        """
        absent = self.absent_support.expand(batch, k, -1)
        if support_images is None or support_labels is None:
            return absent
        b, s = support_images.shape[:2]
        if b not in (1, batch) or support_labels.shape[:3] != (b, s, k):
            raise ValueError("TextDriven: support_labels must be (B, S, K, H, W) with "
                             f"B={b} (1 or the batch, {batch}), S={s}, K={k}; got images "
                             f"{tuple(support_images.shape)}, labels "
                             f"{tuple(support_labels.shape)}")
        deep, dec = self.features(support_images.flatten(0, 1))
        labels = support_labels.float()
        fg_deep, mass = masked_average(deep.unflatten(0, (b, s)), labels)
        fg_dec, _ = masked_average(dec.unflatten(0, (b, s)), labels)
        bg_deep, _ = masked_average(deep.unflatten(0, (b, s)), 1 - labels)
        bg_dec, _ = masked_average(dec.unflatten(0, (b, s)), 1 - labels)
        emb = F.relu(self.support_proj(torch.cat([fg_deep, fg_dec, bg_deep, bg_dec], -1)))
        has = (mass > 1e-3)[..., None]  # a class with no labelled pixel has no support
        return torch.where(has, emb, absent[:b]).expand(batch, -1, -1)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: torch.Tensor,
        text_embeddings: torch.Tensor | None = None,
        support_images: torch.Tensor | None = None,
        support_labels: torch.Tensor | None = None,
        *,
        text_present: torch.Tensor | None = None,
        num_classes: int | None = None,
    ) -> torch.Tensor:
        """Logits (B, K, H, W), one sigmoid channel per class.

        text_embeddings: (K, D) shared by the batch, or (B, K, D); None = no text.
        support_images (B, S, C, H, W) / support_labels (B, S, K, H, W): optional examples
        (hybrid models only); B = 1 shares one support set with the whole batch.
        text_present (K,) or (B, K) bool marks classes whose text
        is given (others use the learned 'absent' embedding). K comes from the text, the
        support labels, or ``num_classes``.
        """
        b = images.shape[0]
        if text_embeddings is not None:
            k = text_embeddings.shape[-2]
        elif support_labels is not None:
            k = support_labels.shape[2]
        elif num_classes is not None:
            k = int(num_classes)
        else:
            raise ValueError("TextDriven: give text_embeddings, support_labels or num_classes")
        if (support_images is not None) != (support_labels is not None):
            raise ValueError("TextDriven: give both support_images and support_labels, or neither")
        if support_images is not None and not self.config.hybrid:
            raise ValueError("TextDriven: this model was built with hybrid=False and takes no "
                             "support examples")
        deep, dec = self.features(images)
        img = self.image_proj(F.adaptive_avg_pool2d(deep, 1)).flatten(1)  # (B, E)
        parts = [img[:, None].expand(-1, k, -1),
                 self.class_embedding(text_embeddings, b, k, text_present, images.device)]
        if self.config.hybrid:
            parts.append(self.support_embedding(support_images, support_labels, b, k))
        ctrl_in = torch.cat(parts, dim=-1)  # (B, K, n_in)
        params = self.controller(ctrl_in.reshape(b * k, -1, 1, 1)).reshape(b, k, -1)
        head_in = self.head_proj(dec)
        return dynamic_head_forward(head_in, params, self.config.head_layers)


def _register() -> None:
    from incontext.models.io import register_architecture

    register_architecture("text-driven", TextDriven, TextDrivenConfig)


_register()
