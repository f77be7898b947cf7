"""`supervised-unet`: a small 2D U-Net trained from scratch on the support pairs only."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from incontext.baselines.base import Baseline, check_inputs
from incontext.colour import check_rgb
from incontext.device import resolve_device


def _block(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.GroupNorm(min(groups, cout), cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(min(groups, cout), cout),
        nn.ReLU(inplace=True),
    )


class SmallUNet(nn.Module):
    """U-Net with ``levels`` resolutions (``levels - 1`` poolings), widths base * 2**i."""

    def __init__(self, levels: int = 4, base: int = 16, groups: int = 8,
                 in_channels: int = 1) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(levels)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_block(cin, w, groups))
            cin = w
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for w_hi, w_lo in zip(widths[-2::-1], widths[:0:-1], strict=True):
            self.up.append(nn.ConvTranspose2d(w_lo, w_hi, 2, stride=2))
            self.fuse.append(_block(2 * w_hi, w_hi, groups))
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.multiple = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, fuse, skip in zip(self.up, self.fuse, skips[-2::-1], strict=True):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def _with_channels(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) -> (N, 1, H, W); (N, C, H, W) as is."""
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    return x[:, None] if x.ndim == 3 else x


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    *,
    flips: bool = True,
    rot90: bool = True,
    max_rotate_deg: float = 15.0,
    scale: float = 0.1,
    translate: float = 0.05,
    brightness: float = 0.1,
    contrast: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random per-sample flips, 90-degree rotations (square images), small affine warp and
    brightness/contrast on a batch (B, 1, H, W); labels are warped with the images."""
    b, _, h, w = images.shape

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    x, y = images, labels
    if flips:
        f = rand(b) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(-1), x)
        y = torch.where(f[:, None, None, None], y.flip(-1), y)
        f = rand(b) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(-2), x)
        y = torch.where(f[:, None, None, None], y.flip(-2), y)
    if rot90 and h == w:
        k = torch.randint(0, 4, (b,), generator=gen)
        x = torch.stack([torch.rot90(x[i], int(k[i]), dims=(-2, -1)) for i in range(b)])
        y = torch.stack([torch.rot90(y[i], int(k[i]), dims=(-2, -1)) for i in range(b)])
    if max_rotate_deg > 0 or scale > 0 or translate > 0:
        ang = (rand(b) * 2 - 1) * math.radians(max_rotate_deg)
        s = 1 + (rand(b) * 2 - 1) * scale
        t = (rand(b, 2) * 2 - 1) * 2 * translate  # normalised coordinates span 2
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        theta = torch.stack(
            [torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if brightness > 0 or contrast > 0:
        c = 1 + (rand(b, 1, 1, 1) * 2 - 1) * contrast
        br = (rand(b, 1, 1, 1) * 2 - 1) * brightness
        mean = x.mean(dim=(-2, -1), keepdim=True)
        x = ((x - mean) * c + mean + br).clamp(0.0, 1.0)
    return x, y


def foreground_logit(labels: np.ndarray, floor: float = 1e-3) -> float:
    """Logit of the labels' foreground fraction, clipped to [floor, 1 - floor]."""
    fraction = float(np.clip(np.mean(labels), floor, 1.0 - floor))
    return math.log(fraction / (1.0 - fraction))


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (per-sample Dice, smoothed by 1, averaged over the batch)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    denom = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    soft_dice = (2 * inter + 1) / (denom + 1)
    return bce + (1 - soft_dice).mean()


class SupervisedUNet(Baseline):
    """Train a fresh small U-Net on the support pairs (never the queries), then predict.

    Adam with a fixed budget of ``steps`` mini-batches of ``batch_size`` supports sampled with
    replacement, each freshly augmented; loss BCE + soft Dice. Weight init, sampling and
    augmentation all follow ``seed`` (the global torch RNG state is restored afterwards).
    ``prior_bias`` starts the output layer at the supports' foreground fraction instead of
    near p = 0.5: from that even start, 100 steps on small or thin structures often end in a
    network that predicts nothing (training pool's val split, N = 16, 100 steps,
    benchmarks/unet_gate.py: mean Dice of 9 datasets 65.0 -> 69.5, breast lesions 13.9 ->
    38.9; MODEL_CARD.md, "Session 20").
    The default budget (150 steps x 4 images) costs about 20-35 s per task at 128 x 128 on one
    CPU core, independent of the number of supports (docs/metrics.md has the measurement).
    ``max_threads`` caps torch's intra-op threads while this method runs. ``device``
    (``"cpu"``, ``"cuda"``, ``"auto"``, ...; :mod:`incontext.device`) is where the U-Net
    trains and predicts; sampling and augmentation stay on the CPU, so the draws and
    augmentations are the same everywhere (the results are not bit-identical across devices).
    """

    name = "supervised-unet"

    def __init__(
        self,
        steps: int = 150,
        batch_size: int = 4,
        lr: float = 3e-3,
        levels: int = 4,
        base_features: int = 16,
        groups: int = 8,
        augmentation: bool = True,
        prior_bias: bool = True,
        max_threads: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if steps < 0 or batch_size < 1 or levels < 1 or base_features < 1 or lr <= 0:
            raise ValueError(
                "supervised-unet: steps >= 0, batch_size/levels/base_features >= 1"
                " and lr > 0 are required"
            )
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.levels = int(levels)
        self.base_features = int(base_features)
        self.groups = int(groups)
        self.augmentation = bool(augmentation)
        self.prior_bias = bool(prior_bias)
        self.max_threads = max_threads
        self.device = resolve_device(str(device))
        self.last_train_seconds: float | None = None
        self.last_loss: float | None = None

    def _predict(
        self,
        support_images: np.ndarray,
        support_labels: np.ndarray,
        query_images: np.ndarray,
        *,
        seed: int,
    ) -> np.ndarray:
        network = self.fit(support_images, support_labels, seed=seed)
        return self.infer(network, query_images)

    def fit(self, support_images: np.ndarray, support_labels: np.ndarray, *,
            seed: int) -> SmallUNet:
        """Train a fresh network on (S, H, W) (or (S, C, H, W)) images in [0, 1] and (S, H, W)
        0/1 labels, unchecked (``predict`` checks); seeded as ``predict``."""
        threads = torch.get_num_threads()
        if self.max_threads is not None:
            torch.set_num_threads(self.max_threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                gen = torch.Generator().manual_seed(seed)
                start = time.perf_counter()
                network = self._train(support_images, support_labels, gen)
                self.last_train_seconds = time.perf_counter() - start
                return network
        finally:
            torch.set_num_threads(threads)

    def infer(self, network: SmallUNet, query_images: np.ndarray) -> np.ndarray:
        """(Q, H, W) foreground probabilities of a network from :meth:`fit`."""
        threads = torch.get_num_threads()
        if self.max_threads is not None:
            torch.set_num_threads(self.max_threads)
        try:
            return self._infer(network, query_images)
        finally:
            torch.set_num_threads(threads)

    def _train(self, images: np.ndarray, labels: np.ndarray, gen: torch.Generator) -> SmallUNet:
        x_all = _with_channels(images)
        model = SmallUNet(self.levels, self.base_features, self.groups, x_all.shape[1]
                          ).to(self.device)
        x_all, _ = _pad_to_multiple(x_all, model.multiple)
        y_all, _ = _pad_to_multiple(torch.from_numpy(labels)[:, None], model.multiple)
        if self.prior_bias:  # start at the supports' foreground fraction, not at p = 0.5
            with torch.no_grad():
                model.head.bias.fill_(foreground_logit(labels))
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        model.train()
        for _ in range(self.steps):
            idx = torch.randint(0, x_all.shape[0], (self.batch_size,), generator=gen)
            x, y = x_all[idx], y_all[idx]
            if self.augmentation:
                x, y = augment(x, y, gen)
            x, y = x.to(self.device), y.to(self.device)
            loss = dice_bce_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        # read once at the end: a per-step read would wait for the GPU every step
        self.last_loss = float(loss.detach()) if self.steps else None
        return model

    @torch.no_grad()
    def _infer(self, model: SmallUNet, queries: np.ndarray, chunk: int = 16) -> np.ndarray:
        model.eval()
        out = []
        for i in range(0, queries.shape[0], chunk):
            x, (h, w) = _pad_to_multiple(_with_channels(queries[i : i + chunk]), model.multiple)
            out.append(torch.sigmoid(model(x.to(self.device)))[:, 0, :h, :w].cpu().numpy())
        return np.concatenate(out)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": "adam",
            "loss": "bce + soft dice",
            "levels": self.levels,
            "base_features": self.base_features,
            "norm": f"groupnorm({self.groups})",
            "head_bias": "foreground prior" if self.prior_bias else "default init",
            "augmentation": "flips, rot90, affine(rot 15deg, scale 0.1, shift 0.05), "
            "brightness 0.1, contrast 0.2"
            if self.augmentation
            else "none",
        }


class SupervisedUNetRGB(SupervisedUNet):
    """``supervised-unet`` with R, G, B input: the U-Net sees the colour of colour tasks.

    The benchmark passes ``support_colour`` (S, 3, H, W) and ``query_colour`` (Q, 3, H, W)
    when the index stores colour (``uses_colour``); grey tasks give the grey image three
    times. The fair comparison for in-context models that use colour (``--model-colour``).
    """

    name = "supervised-unet-rgb"
    uses_colour = True

    def predict(self, support_images: np.ndarray, support_labels: np.ndarray,
                query_images: np.ndarray, *, seed: int,
                support_colour: np.ndarray | None = None,
                query_colour: np.ndarray | None = None) -> np.ndarray:
        """(Q, H, W) probabilities, trained and predicted on R, G, B when given."""
        si, sl, qi = check_inputs(support_images, support_labels, query_images)
        if qi.shape[0] == 0 or not sl.any():
            return np.zeros(qi.shape, dtype=np.float32)
        if support_colour is None or query_colour is None:
            x_s, x_q = np.repeat(si[:, None], 3, axis=1), np.repeat(qi[:, None], 3, axis=1)
        else:
            x_s = check_rgb(support_colour, si, "support_colour")
            x_q = check_rgb(query_colour, qi, "query_colour")
        out = np.asarray(self._predict(x_s, sl, x_q, seed=int(seed)), dtype=np.float32)
        if out.shape != qi.shape or not np.isfinite(out).all():
            raise RuntimeError(f"{self.name}: produced shape {out.shape} (expected {qi.shape}) "
                               "or NaN/inf probabilities")
        return np.clip(out, 0.0, 1.0)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "input": "R, G, B (grey tasks: grey three times)"}

