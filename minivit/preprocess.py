"""From an image file to the array a model reads: the preprocessing of a checkpoint.

A transformers folder says in ``preprocessor_config.json`` (ViTImageProcessor,
DeiTImageProcessor) what its model was trained on, and ``Preprocessor`` does the same steps, in
the same order and the same arithmetic as transformers' PIL image processor:

1. convert to RGB (grayscale and RGBA images too);
2. resize with Pillow to ``size`` ({height, width}, or {shortest_edge}: the short side to that
   length, the long one int(length * long / short)), with the ``resample`` filter (a PIL code:
   2 bilinear, 3 bicubic), on the 8-bit image;
3. centre-crop to ``crop_size``: the window from row (H - h) // 2 and column (W - w) // 2;
4. rescale: x * rescale_factor (1/255) in float64, stored as float32;
5. normalise: (x - mean) / std per channel, in float32.

``Preprocessor.for_dataset`` gives the same for a model minivit trained on one of its datasets:
to its channels (grayscale for digits and MNIST), resized to its size (bicubic), scaled to
[0, 1] and normalised as ``minivit.data`` normalises that dataset.
"""

import json
import os

import numpy as np

from . import data

DEFAULTS = dict(do_resize=True, size={"height": 224, "width": 224}, resample=2, do_center_crop=False,
                crop_size=None, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


class Preprocessor:
    """An image file (or PIL image) -> (C, H, W) float32, as the settings (DEFAULTS' keys) say."""

    def __init__(self, grayscale=False, invert=False, **settings):
        # a processor config's other keys (its type, do_convert_rgb, ...) are not steps here
        self.settings = {**DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS}}
        self.grayscale, self.invert = grayscale, invert

    @classmethod
    def from_folder(cls, folder):
        """The preprocessing of a transformers folder: its preprocessor_config.json, else ViT's."""
        path = os.path.join(folder, "preprocessor_config.json")
        if not os.path.isfile(path):
            return cls()
        with open(path) as f:
            return cls(**json.load(f))

    @classmethod
    def for_dataset(cls, ds, img_size):
        """The preprocessing of a model minivit trained on dataset ``ds`` (minivit.data): its
        channels, ``img_size``, pixels to [0, 1] as the dataset's are, then its normalisation
        (the training split's per-channel mean and std). Digits and MNIST are light strokes on a
        dark ground: a photo of dark ink on paper is inverted first."""
        return cls(grayscale=ds.image_shape[0] == 1, invert=ds.name in data.LIGHT_ON_DARK,
                   size={"height": img_size, "width": img_size}, resample=3,
                   image_mean=ds.mean.ravel().tolist(), image_std=ds.std.ravel().tolist())

    def __call__(self, image):
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            try:
                image = Image.open(image)
                image.load()
            except OSError as e:
                raise ValueError(f"{os.fspath(image)!r} is not an image Pillow can read: {e}") from e
        s = self.settings
        image = image.convert("L" if self.grayscale else "RGB")
        if self.invert:  # dark ink on light paper -> light on dark, as the dataset's digits are
            image = Image.eval(image, lambda v: 255 - v)
        if s["do_resize"]:
            size = _output_size(image.size, s["size"])
            image = image.resize(size, resample=s["resample"], reducing_gap=None)
        x = np.asarray(image)
        x = (x[None] if x.ndim == 2 else x.transpose(2, 0, 1))  # (C, H, W), uint8
        if s["do_center_crop"] and s["crop_size"]:
            h, w = s["crop_size"]["height"], s["crop_size"]["width"]
            H, W = x.shape[1:]
            if h > H or w > W:
                raise ValueError(f"crop {h}x{w} is larger than the resized image {H}x{W}")
            top, left = (H - h) // 2, (W - w) // 2
            x = x[:, top:top + h, left:left + w]
        x = (x.astype(np.float64) * s["rescale_factor"]).astype(np.float32) if s["do_rescale"] \
            else x.astype(np.float32)
        if s["do_normalize"]:
            mean = np.asarray(s["image_mean"], dtype=np.float32).reshape(-1, 1, 1)
            std = np.asarray(s["image_std"], dtype=np.float32).reshape(-1, 1, 1)
            x = (x - mean) / std
        return x


def _output_size(wh, size):
    """PIL's (width, height) to resize to, for a processor's ``size``."""
    w, h = wh
    if "shortest_edge" in size:
        s = size["shortest_edge"]
        short, long = (h, w) if h <= w else (w, h)
        new_short, new_long = s, int(s * long / short)
        return (new_long, new_short) if h <= w else (new_short, new_long)
    return size["width"], size["height"]
