"""Preprocessing equals transformers' image processors (PIL backend) on real image files, and
minivit's own checkpoints get their dataset's scaling."""

import json

import numpy as np
import pytest
from PIL import Image

from minivit import data
from minivit.preprocess import Preprocessor

transformers = pytest.importorskip("transformers")


def photo(tmp_path, size=(300, 200), mode="RGB", name="photo.png"):
    """A real image file with structure (gradients and noise), of PIL ``size`` (width, height)."""
    gen = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([255 * xx / w, 255 * yy / h, gen.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)
    path = tmp_path / name
    Image.fromarray(rgb).convert(mode).save(path)
    return path


PROCESSORS = {  # (processor class, its settings)
    "vit-default": ("ViTImageProcessorPil", {}),
    "deit-resize-crop": ("DeiTImageProcessorPil", {}),
    "shortest-edge": ("ViTImageProcessorPil", dict(size={"shortest_edge": 160}, do_center_crop=True,
                                                   crop_size={"height": 128, "width": 128}, resample=3,
                                                   image_mean=[0.485, 0.456, 0.406],
                                                   image_std=[0.229, 0.224, 0.225])),
    "no-normalize": ("ViTImageProcessorPil", dict(do_normalize=False, size={"height": 96, "width": 64})),
}


@pytest.mark.parametrize("name", PROCESSORS)
@pytest.mark.parametrize("size", [(300, 200), (200, 300), (224, 224)])
def test_equal_to_transformers_image_processor(tmp_path, name, size):
    cls, settings = PROCESSORS[name]
    ref = getattr(transformers, cls)(**settings)
    ref.save_pretrained(tmp_path)  # writes preprocessor_config.json, which minivit reads
    ours = Preprocessor.from_folder(tmp_path)
    path = photo(tmp_path, size)
    expected = ref(Image.open(path), return_tensors="np")["pixel_values"][0]
    got = ours(path)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_are_converted_to_rgb_as_transformers_does(tmp_path, mode):
    ref = transformers.ViTImageProcessorPil(do_convert_rgb=True)
    path = photo(tmp_path, mode=mode)
    expected = ref(Image.open(path), return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(Preprocessor()(path), expected)


def test_a_folder_without_a_processor_config_gets_vits(tmp_path):
    assert Preprocessor.from_folder(tmp_path).settings["size"] == {"height": 224, "width": 224}
    config = {"size": {"height": 32, "width": 32}, "image_processor_type": "ViTImageProcessor"}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    assert Preprocessor.from_folder(tmp_path)(photo(tmp_path)).shape == (3, 32, 32)


def test_dataset_preprocessing_inverts_ink_and_normalises(tmp_path):
    ds = data.load_dataset("digits")
    pre = Preprocessor.for_dataset(ds, 8)
    paper = np.full((80, 80), 255, np.uint8)
    paper[20:60, 30:50] = 0  # a dark stroke on white paper, two 8x8 pixels wide: a "1"
    Image.fromarray(paper).save(tmp_path / "one.png")
    x = pre(tmp_path / "one.png")
    assert x.shape == (1, 8, 8)
    raw = x * ds.std[0] + ds.mean[0]  # back to the dataset's [0, 1] scale
    assert raw[0, 4, 4] > 0.9 and raw[0, 0, 0] < 0.05  # the stroke bright, the paper dark
    with pytest.raises(ValueError, match="is not an image Pillow can read"):
        (tmp_path / "notes.txt").write_text("hello")
        pre(tmp_path / "notes.txt")
