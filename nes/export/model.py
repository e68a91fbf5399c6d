"""`EnsembleModel`: the members of a bundle as one module (preprocessing + mean softmax)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

MAX_BATCH = 4096  # images per forward pass: a member's activations grow with it (memory, not speed)


class EnsembleModel(nn.Module):
    """The members of a bundle as one module.

    `forward(x)` takes float images [N, C, H, W] scaled to [0, 1] (the dataset's stored size),
    applies the members' evaluation preprocessing (zero pad, center crop, normalize) and returns
    the mean of the members' softmax outputs [N, K]. `predict(images)` accepts uint8 or float
    arrays / tensors in the dataset's shape and returns those probabilities as float32 on the CPU.
    """

    def __init__(self, members: Sequence[nn.Module], manifest: dict[str, Any]) -> None:
        super().__init__()
        ds = manifest["dataset"]
        pre, inp = ds["preprocess"], ds["input"]
        self.members = nn.ModuleList(members)
        self.manifest = manifest
        self.member_names = [m["name"] for m in manifest["members"]]
        self.class_names = list(ds["class_names"])
        self.channels, self.height, self.width = int(inp["channels"]), int(inp["height"]), int(inp["width"])
        self.pad, self.image_size = int(pre["pad"]), int(pre["image_size"])
        self.tta_flip = bool(pre.get("tta_flip", False))  # members scored as the mean with the mirror image
        self.register_buffer("mean", torch.tensor(pre["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(pre["std"], dtype=torch.float32).view(1, -1, 1, 1))
        # the evaluation crop: the center of the zero-padded image (as nes.data.DeviceLoader does)
        self.crop_y = (self.height + 2 * self.pad - self.image_size) // 2
        self.crop_x = (self.width + 2 * self.pad - self.image_size) // 2
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        p, s = self.pad, self.image_size
        if p:
            x = F.pad(x, (p, p, p, p))
        x = x[:, :, self.crop_y:self.crop_y + s, self.crop_x:self.crop_x + s]
        return (x - self.mean) / self.std

    def _softmaxes(self, x: torch.Tensor) -> torch.Tensor:
        """[M, N, K] member softmax outputs for preprocessed input (with `tta_flip`, the mean of the
        image's and its horizontal mirror's, as the members were scored)."""
        if self.tta_flip:
            xf = x.flip(3)
            return torch.stack([0.5 * (torch.softmax(m(x).float(), dim=1) + torch.softmax(m(xf).float(), dim=1))
                                for m in self.members])
        return torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._softmaxes(self.preprocess(x)).mean(0)

    def member_probs(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        """[M, N, K] softmax outputs of every member (float32, CPU); ValueError when one is not finite
        (a broken bundle must never pass NaN off as a prediction)."""
        if not 1 <= int(batch_size) <= MAX_BATCH:
            raise ValueError(f"batch size must be 1 to {MAX_BATCH}, got {batch_size} (larger batches only take more "
                             "memory)")
        x = self.to_batch(images)
        out = []
        with torch.no_grad():
            for chunk in x.split(batch_size):
                chunk = self.preprocess(chunk.to(self.mean.device))
                if chunk.device.type == "cpu":  # CPU convs (depthwise, pooling) are 2× faster in channels-last
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                out.append(self._softmaxes(chunk).cpu())
        probs = torch.cat(out, dim=1) if out else torch.zeros(len(self.members), 0, len(self.class_names))
        bad = [n for n, p in zip(self.member_names, probs) if not bool(torch.isfinite(p).all())]
        if bad:
            raise ValueError(f"member(s) {', '.join(bad)} of this bundle predict NaN or infinite probabilities: their "
                             "weights or the bundle's preprocessing are broken; export the bundle again")
        return probs

    def predict(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        """Ensemble probabilities [N, K] (float32, CPU) for uint8 (0–255) or float (0–1) images."""
        return self.member_probs(images, batch_size).mean(0)

    def classify(self, images: Any) -> list[str]:
        """The predicted class name of every image."""
        return [self.class_names[i] for i in self.predict(images).argmax(1).tolist()]

    @property
    def expected_shape(self) -> str:
        return f"{self.channels}×{self.height}×{self.width}"

    def to_batch(self, images: Any) -> torch.Tensor:
        """uint8/float images in any of the accepted layouts → float32 [N, C, H, W] in [0, 1]."""
        if isinstance(images, np.ndarray):
            if images.dtype == object:
                raise ValueError("images must be a numeric array (uint8 0–255 or float 0–1), not objects")
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not torch.is_tensor(images):
            raise ValueError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
        x = images
        c, h, w = self.channels, self.height, self.width
        shape = tuple(x.shape)
        if x.dim() == 4 and shape[1:] == (c, h, w):
            pass
        elif x.dim() == 4 and shape[1:] == (h, w, c):
            x = x.permute(0, 3, 1, 2)
        elif x.dim() == 3 and c == 1 and shape[1:] == (h, w):
            x = x[:, None]
        elif x.dim() == 3 and shape == (c, h, w):
            x = x[None]
        elif x.dim() == 3 and shape == (h, w, c):
            x = x.permute(2, 0, 1)[None]
        elif x.dim() == 2 and c == 1 and shape == (h, w):
            x = x[None, None]
        else:
            forms = f"[N, {c}, {h}, {w}] or [N, {h}, {w}, {c}]" + (f" or [N, {h}, {w}]" if c == 1 else "")
            got_c = shape[1] if x.dim() == 4 and shape[2:] == (h, w) else (
                shape[-1] if x.dim() == 4 and shape[1:3] == (h, w) else None)
            hint = (f"; they have {got_c} channels but this ensemble takes {c}-channel "
                    f"({'grayscale' if c == 1 else 'RGB'}) images" if got_c is not None else "")
            raise ValueError(f"images of shape {list(shape)} do not fit this ensemble{hint}: it expects "
                             f"{self.manifest['dataset']['name']} images of {self.expected_shape} "
                             f"(channels×height×width), as {forms}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.dtype.is_floating_point:
            x = x.float()
            if x.numel() and not bool(torch.isfinite(x).all()):
                raise ValueError("images contain NaN or infinite values")
            if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
                raise ValueError(f"float images must be scaled to [0, 1] (got values from {float(x.min()):.3g} "
                                 f"to {float(x.max()):.3g}); pass uint8 0–255 images or divide by 255")
        else:
            raise ValueError(f"images must be uint8 (0–255) or float (0–1), got {str(x.dtype).replace('torch.', '')}")
        return x.contiguous()
