"""Datasets, normalisation, augmentation and batching.

``load_dataset(name, data_dir=None, val_fraction=0.1)`` returns a ``Dataset``: images as float32
(N, C, H, W) scaled to [0, 1], integer labels, and the augmentation that suits it:

* ``digits``   -- scikit-learn's 1,797 real 8x8 handwritten digits (shipped with scikit-learn),
  split 80/20, stratified by class, with a fixed seed that does not depend on the training seed;
* ``mnist``    -- the four IDX files (``train-images-idx3-ubyte`` ..., raw or ``.gz``) in data_dir;
* ``cifar10``  -- the binary batches (``cifar-10-batches-bin/data_batch_1.bin`` ... ``test_batch.bin``)
  in data_dir; each record is one label byte and 3,072 pixel bytes (the Python pickles are never read);
* ``synthetic`` -- a tiny 8x8 ten-class set for tests: one fixed random pattern per class plus noise.

Every dataset gets a validation split, carved out of its training split: from each class a fixed,
seeded ``val_fraction`` (stratified, and the same whatever the training seed). Model selection
(which epoch's weights become ``best.npz``) looks at the validation split only, so that the test
split, looked at once for the chosen model, stays an honest estimate of accuracy on new images.

Images are normalised per channel with the training split's mean and std. Training batches come
shuffled and augmented (random shifts by padding and cropping, horizontal flips where they suit the
data; ``mixup`` on top) from an explicit ``numpy.random.Generator``, whose state can be saved.
"""

import gzip
import os
from dataclasses import dataclass

import numpy as np

from . import validate

DIGITS_SPLIT_SEED = 0  # fixed: the test split never changes with the training seed
VAL_SPLIT_SEED = 1  # fixed: nor does the validation split
DATASETS = ("digits", "mnist", "cifar10", "synthetic")
SPLITS = ("train", "val", "test")


LIGHT_ON_DARK = ("digits", "mnist")  # strokes brighter than the ground
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_names(name, num_classes):
    """The label of each class of dataset ``name``: digits for digits and MNIST, CIFAR-10's names."""
    return list(CIFAR10_CLASSES) if name == "cifar10" else [str(i) for i in range(num_classes)]


@dataclass
class Dataset:
    """Train, validation and test images (N, C, H, W) float32 in [0, 1], labels (N,) int64 in
    [0, num_classes), and the augmentation. Checked on construction: the training and test splits
    are not empty, every split has the same image shape, labels are in range, pixels are finite."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    crop_padding: int  # random crop of an image padded with this many zero pixels (0: off)
    flip: bool  # random horizontal flip

    def __post_init__(self):
        self._check()
        # per-channel statistics of the training split, (1, C, 1, 1)
        self.mean = self.x_train.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
        self.std = self.x_train.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
        self.std = np.maximum(self.std, 1e-6)

    def _check(self):
        shape = tuple(self.x_train.shape[1:])
        for split in SPLITS:
            x, y = self.split(split)
            where = f"dataset {self.name!r}, {split} split"
            if x.ndim != 4 or tuple(x.shape[1:]) != shape:
                raise ValueError(f"{where}: images of shape {tuple(x.shape[1:])}, but the training images "
                                 f"are {shape}; expected every split to hold (N, C, H, W) images of one size")
            if len(x) != len(y):
                raise ValueError(f"{where}: {len(x)} images but {len(y)} labels; expected equal counts")
            if len(y) == 0 and split != "val":
                raise ValueError(f"{where} is empty; expected at least one image")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{where}: label {int(y.min() if y.min() < 0 else y.max())} found; "
                                 f"expected labels 0..{self.num_classes - 1}")
            if not np.isfinite(x).all():
                raise ValueError(f"{where}: non-finite pixel values; expected numbers in [0, 1]")

    def split(self, name):
        """(images, labels) of split ``name``: "train", "val" or "test"."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])  # (C, H, W)

    def normalize(self, x):
        return (x - self.mean) / self.std


# how each dataset is augmented: (crop_padding, flip)
AUGMENT = {"digits": (1, False), "mnist": (2, False), "cifar10": (4, True), "synthetic": (1, True)}


def load_dataset(name, data_dir=None, val_fraction=0.1):
    """The dataset ``name`` with ``val_fraction`` of each class of its training split held out for
    validation (0 keeps the whole training split and leaves the validation split empty)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    validate.number("val_fraction", val_fraction, 0.0, 1.0, high_open=True)
    if name in ("mnist", "cifar10") and data_dir is None:
        raise ValueError(f"dataset {name!r} is read from local files: give the folder with --data-dir")
    readers = {"digits": read_digits, "synthetic": make_synthetic,
               "mnist": lambda: read_mnist(data_dir), "cifar10": lambda: read_cifar10(data_dir)}
    x_train, y_train, x_test, y_test = readers[name]()
    train, val = stratified_split(y_train, val_fraction, VAL_SPLIT_SEED)
    return Dataset(name, x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test,
                   10, *AUGMENT[name])


# ----------------------------------------------------------------------------- digits and synthetic

def stratified_split(y, test_fraction, seed):
    """Indices (train, test): from each class a seeded round(test_fraction * n_class) go to test."""
    gen = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = gen.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def read_digits():
    """scikit-learn's digits: 1,797 images 8x8, pixel values 0..16, ten classes; 80/20 split.
    Returns (x_train, y_train, x_test, y_test), as every reader here."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = d.target.astype(np.int64)
    tr, te = stratified_split(y, 0.2, DIGITS_SPLIT_SEED)
    return x[tr], y[tr], x[te], y[te]


def make_synthetic(n_train=80, n_test=40, num_classes=10, size=8, seed=0):
    """Class c is a fixed random 8x8 pattern t_c plus Gaussian noise: x = clip(t_c + 0.2 n, 0, 1)."""
    gen = np.random.default_rng(seed)
    templates = gen.random((num_classes, 1, size, size))
    y = np.arange(n_train + n_test) % num_classes
    x = np.clip(templates[y] + 0.2 * gen.standard_normal((len(y), 1, size, size)), 0.0, 1.0)
    x, y = x.astype(np.float32), y.astype(np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ----------------------------------------------------------------------------- file readers

def _read_bytes(path, what):
    """The file's bytes (gunzipped for .gz), or a ValueError that names it and what was expected."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: file not found; expected {what}")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read it ({e}); expected {what}") from e


_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned bytes, 1 or 3 dimensions


def read_idx(path, ndim):
    """An IDX file (MNIST's format): big-endian magic 0x0000080{ndim}, ndim sizes, then uint8 data."""
    what = f"an IDX file of unsigned bytes with {ndim} dimension(s) (magic 0x{_IDX_MAGIC[ndim]:08x})"
    buf = _read_bytes(path, what)
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: {len(buf)} bytes is too short for the IDX header ({header} bytes); "
                         f"expected {what}")
    magic = int.from_bytes(buf[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(f"{path}: wrong magic number 0x{magic:08x}; expected {what}")
    shape = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = header + int(np.prod(shape))
    if len(buf) != need:
        raise ValueError(
            f"{path}: {len(buf)} bytes, but its header promises shape {shape}, i.e. {need} bytes "
            f"(truncated or not {what})"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(shape)


def _find(data_dir, names):
    """The first existing file among ``names`` in data_dir, else the first name (for the error)."""
    for n in names:
        if os.path.isfile(os.path.join(data_dir, n)):
            return os.path.join(data_dir, n)
    return os.path.join(data_dir, names[0])


def read_mnist(data_dir):
    """MNIST from train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-* (raw or .gz)."""
    split = {}
    for part in ("train", "t10k"):
        xf = _find(data_dir, [f"{part}-images-idx3-ubyte", f"{part}-images-idx3-ubyte.gz"])
        yf = _find(data_dir, [f"{part}-labels-idx1-ubyte", f"{part}-labels-idx1-ubyte.gz"])
        x, y = read_idx(xf, 3), read_idx(yf, 1)
        if len(x) != len(y):
            raise ValueError(f"{xf} holds {len(x)} images but {yf} holds {len(y)} labels; "
                             "expected equal counts")
        if y.size and y.max() > 9:
            raise ValueError(f"{yf}: label {y.max()} out of range; expected digit labels 0..9")
        split[part] = ((x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64))
    (xtr, ytr), (xte, yte) = split["train"], split["t10k"]
    return xtr, ytr, xte, yte


CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue bytes


def read_cifar_batch(path):
    """One CIFAR-10 binary batch: records of a label byte (0..9) and 3x32x32 pixel bytes."""
    what = f"a CIFAR-10 binary batch: records of {CIFAR_RECORD} bytes (label 0..9, then 3x32x32 pixels)"
    buf = _read_bytes(path, what)
    if len(buf) == 0 or len(buf) % CIFAR_RECORD:
        raise ValueError(f"{path}: {len(buf)} bytes is not a whole number of records (truncated?); "
                         f"expected {what}")
    rec = np.frombuffer(buf, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() > 9:
        raise ValueError(f"{path}: label byte {y.max()} found; expected {what}")
    return rec[:, 1:].reshape(-1, 3, 32, 32), y


def read_cifar10(data_dir):
    """CIFAR-10 from data_batch_1..5.bin and test_batch.bin in data_dir or data_dir/cifar-10-batches-bin."""
    sub = os.path.join(data_dir, "cifar-10-batches-bin")
    if os.path.isdir(sub):
        data_dir = sub
    train = [read_cifar_batch(os.path.join(data_dir, f"data_batch_{i}.bin")) for i in range(1, 6)]
    xte, yte = read_cifar_batch(os.path.join(data_dir, "test_batch.bin"))
    xtr = np.concatenate([x for x, _ in train])
    ytr = np.concatenate([y for _, y in train])
    return xtr.astype(np.float32) / 255.0, ytr, xte.astype(np.float32) / 255.0, yte


# ----------------------------------------------------------------------------- augmentation, batches

def random_crop(x, padding, gen):
    """Pad each image with ``padding`` zeros on every side and cut out a random H x W window:
    a random shift of up to +-padding pixels in each direction. (B, C, H, W) -> same."""
    if padding == 0:
        return x
    B, C, H, W = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # (B, C, H+2p, W+2p)
    dy, dx = gen.integers(0, 2 * padding + 1, size=(2, B))
    rows = (dy[:, None] + np.arange(H))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + np.arange(W))[:, None, None, :]  # (B, 1, 1, W)
    return xpad[np.arange(B)[:, None, None, None], np.arange(C)[None, :, None, None], rows, cols]


def random_flip(x, gen):
    """Mirror each image left-right with probability 1/2."""
    flip = gen.random(len(x)) < 0.5
    return np.where(flip[:, None, None, None], x[..., ::-1], x)


def mixup(x, alpha, gen):
    """Mixup (Zhang et al., 2018): x~ = lam x + (1 - lam) x[perm], lam ~ Beta(alpha, alpha), perm a
    random pairing within the batch. The loss mixes the same way, lam L(y) + (1 - lam) L(y[perm]).
    Returns (x~, perm, lam)."""
    lam = float(gen.beta(alpha, alpha))
    perm = gen.permutation(len(x))
    return lam * x + (1.0 - lam) * x[perm], perm, lam


def batches(ds, split, batch_size, gen=None):
    """Yield normalised (x, y) host batches of ``split`` ("train", "val" or "test"). The training
    split comes shuffled and augmented from ``gen`` (a numpy Generator; its state after the epoch
    decides the next epoch); the others in order, as they are."""
    x_all, y_all = ds.split(split)
    train = split == "train"
    if train and gen is None:
        raise ValueError("training batches are shuffled and augmented: give a numpy Generator as gen")
    order = gen.permutation(len(x_all)) if train else np.arange(len(x_all))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x = x_all[idx]
        if train:
            x = random_crop(x, ds.crop_padding, gen)
            if ds.flip:
                x = random_flip(x, gen)
        yield ds.normalize(x), y_all[idx]
