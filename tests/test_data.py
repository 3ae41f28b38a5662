"""Datasets, readers (on small files written here), augmentation and batching."""

import gzip
import os

import numpy as np
import pytest

from minivit.data import (
    CIFAR_RECORD,
    Dataset,
    batches,
    load_dataset,
    mixup,
    random_crop,
    random_flip,
    read_cifar10,
    read_idx,
    read_mnist,
)


def load_digits(val_fraction=0.1):
    return load_dataset("digits", val_fraction=val_fraction)


def load_synthetic():
    return load_dataset("synthetic", val_fraction=0.0)

# ----------------------------------------------------------------------------- digits

def test_digits_split_is_fixed_stratified_80_20():
    ds = load_digits(val_fraction=0.0)
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_train.dtype == np.float32
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == pytest.approx(0.2 * 1797, abs=5)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    n_class = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(np.bincount(ds.y_test) - 0.2 * n_class) <= 0.5)  # every class 20%, rounded
    again = load_digits()
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    # train and test hold different images (the data has no exact duplicates across them)
    train_rows = {r.tobytes() for r in ds.x_train}
    assert not any(r.tobytes() in train_rows for r in ds.x_test)
    assert ds.crop_padding == 1 and not ds.flip


def test_validation_split_is_carved_from_training_seeded_and_stratified():
    full, ds = load_digits(val_fraction=0.0), load_digits(val_fraction=0.1)
    np.testing.assert_array_equal(ds.x_test, full.x_test)  # the test split is untouched
    assert len(ds.y_train) + len(ds.y_val) == len(full.y_train) == 1438
    n_class = np.bincount(full.y_train)
    assert np.all(np.abs(np.bincount(ds.y_val) - 0.1 * n_class) <= 0.5)  # every class 10%, rounded
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert rows(ds.x_train) | rows(ds.x_val) == rows(full.x_train)
    assert not rows(ds.x_train) & rows(ds.x_val)
    again = load_digits(val_fraction=0.1)  # fixed: the same images every time
    np.testing.assert_array_equal(again.x_val, ds.x_val)
    assert ds.mean != full.mean  # statistics of the images trained on, not of the held-out ones
    np.testing.assert_allclose(ds.mean.ravel(), ds.x_train.mean(), rtol=1e-6)
    assert [len(y) for _, y in batches(ds, "val", 100)] == [100, len(ds.y_val) - 100]
    with pytest.raises(ValueError, match=r"val_fraction must be a finite number in \[0, 1\), got 1"):
        load_digits(val_fraction=1)


def test_dataset_checks_its_splits_on_construction():
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 0, 1])
    Dataset("ok", x, y, x[:0], y[:0], x, y, 2, 1, False)  # an empty validation split is allowed
    with pytest.raises(ValueError, match=r"test split: images of shape \(1, 7, 8\), but the training "
                                         r"images are \(1, 8, 8\)"):
        Dataset("d", x, y, x[:0], y[:0], x[:, :, :7], y, 2, 1, False)
    with pytest.raises(ValueError, match="'d', training split is empty|'d', train split is empty"):
        Dataset("d", x[:0], y[:0], x[:0], y[:0], x, y, 2, 1, False)
    with pytest.raises(ValueError, match="test split is empty"):
        Dataset("d", x, y, x[:0], y[:0], x[:0], y[:0], 2, 1, False)
    with pytest.raises(ValueError, match=r"label 2 found; expected labels 0..1"):
        Dataset("d", x, y + 1, x[:0], y[:0], x, y, 2, 1, False)
    with pytest.raises(ValueError, match="non-finite pixel values"):
        Dataset("d", x, y, x[:0], y[:0], x + np.nan, y, 2, 1, False)
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        Dataset("d", x, y, x[:0], y[:0], x[:3], y, 2, 1, False)


def test_normalisation_uses_training_statistics():
    ds = load_digits()
    z = ds.normalize(ds.x_train)
    assert abs(z.mean()) < 1e-5 and z.std() == pytest.approx(1.0, abs=1e-4)
    assert ds.mean.shape == (1, 1, 1, 1)
    assert abs(ds.normalize(ds.x_test).mean()) < 0.1  # the test split is close to, not exactly, 0


# ----------------------------------------------------------------------------- augmentation

def test_random_crop_is_a_shift_with_zero_fill():
    gen = np.random.default_rng(0)
    x = np.random.default_rng(1).random((200, 2, 5, 6)).astype(np.float32)
    state = gen.bit_generator.state
    out = random_crop(x, 1, gen)
    gen.bit_generator.state = state
    dy, dx = gen.integers(0, 3, size=(2, 200))  # the offsets random_crop drew
    for b in range(200):
        pad = np.zeros((2, 7, 8), dtype=np.float32)
        pad[:, 1:6, 1:7] = x[b]
        np.testing.assert_array_equal(out[b], pad[:, dy[b]:dy[b] + 5, dx[b]:dx[b] + 6])
    shifts = {(int(a), int(b)) for a, b in zip(dy, dx, strict=True)}
    assert len(shifts) == 9  # all 3x3 shifts occur
    assert random_crop(x, 0, gen) is x


def test_random_flip_mirrors_about_half():
    gen = np.random.default_rng(0)
    x = np.random.default_rng(1).random((400, 1, 4, 4))
    out = random_flip(x, gen)
    flipped = np.array([np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x, strict=True)])
    same = np.array([np.array_equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert np.all(flipped ^ same)
    assert 150 < flipped.sum() < 250


def test_batches_shuffle_cover_everything_and_repeat_from_a_saved_state():
    ds = load_synthetic()
    gen = np.random.default_rng(3)
    epoch1 = list(batches(ds, "train", 32, gen))
    assert [len(y) for _, y in epoch1] == [32, 32, 16]  # the last batch keeps the remainder
    labels = np.concatenate([y for _, y in epoch1])
    np.testing.assert_array_equal(np.sort(labels), np.sort(ds.y_train))
    assert not np.array_equal(labels, ds.y_train)  # shuffled
    state = gen.bit_generator.state
    epoch2 = list(batches(ds, "train", 32, gen))
    gen2 = np.random.default_rng(99)
    gen2.bit_generator.state = state
    for (a, ya), (b, yb) in zip(epoch2, batches(ds, "train", 32, gen2), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)
    # test batches: in order, normalised, not augmented
    xt = np.concatenate([x for x, _ in batches(ds, "test", 16)])
    np.testing.assert_allclose(xt, ds.normalize(ds.x_test), rtol=1e-6)
    with pytest.raises(ValueError, match="numpy Generator"):
        next(batches(ds, "train", 32))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        next(batches(ds, "dev", 32))


def test_mixup_mixes_each_image_with_a_partner():
    gen = np.random.default_rng(0)
    x = np.random.default_rng(1).random((16, 1, 4, 4)).astype(np.float32)
    lams = []
    for _ in range(50):
        xm, perm, lam = mixup(x, 0.8, gen)
        assert sorted(perm) == list(range(16)) and 0.0 < lam < 1.0 and xm.dtype == np.float32
        np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[perm], rtol=1e-6)
        lams.append(lam)
    assert np.std(lams) > 0.1  # Beta(0.8, 0.8) spreads over (0, 1)
    state = np.random.default_rng(5).bit_generator.state
    a, b = np.random.default_rng(), np.random.default_rng()
    a.bit_generator.state = b.bit_generator.state = state
    np.testing.assert_array_equal(mixup(x, 0.8, a)[0], mixup(x, 0.8, b)[0])


# ----------------------------------------------------------------------------- MNIST IDX files

def write_idx(path, array, magic=None, truncate=0):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else 0x800 + array.ndim
    raw = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape) + array.tobytes()
    raw = raw[:len(raw) - truncate]
    if path.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)


def write_mnist(folder, gz=False, n_train=12, n_test=6):
    gen = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": gen.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": gen.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": gen.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": gen.integers(0, 10, n_test)}
    for name, a in arrays.items():
        write_idx(os.path.join(folder, name + (".gz" if gz else "")), a)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader(tmp_path, gz):
    arrays = write_mnist(str(tmp_path), gz=gz)
    ds = load_dataset("mnist", str(tmp_path), val_fraction=0.0)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(ds.x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert not ds.flip


def test_idx_errors_name_the_file_and_the_format(tmp_path):
    p = str(tmp_path / "x-idx3-ubyte")
    with pytest.raises(ValueError, match=r"x-idx3-ubyte: file not found; expected an IDX file"):
        read_idx(p, 3)
    write_idx(p, np.zeros((2, 3, 3)), magic=0x801)
    with pytest.raises(ValueError, match=r"x-idx3-ubyte: wrong magic number 0x00000801; expected .*00803"):
        read_idx(p, 3)
    write_idx(p, np.zeros((2, 3, 3)), truncate=5)
    with pytest.raises(ValueError, match=r"x-idx3-ubyte: 29 bytes, but its header promises shape "
                                         r"\(2, 3, 3\), i.e. 34 bytes"):
        read_idx(p, 3)
    with open(p, "wb") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError, match="too short for the IDX header"):
        read_idx(p, 3)
    gz = str(tmp_path / "y-idx1-ubyte.gz")
    with open(gz, "wb") as f:
        f.write(b"this is not gzip data")
    with pytest.raises(ValueError, match=r"y-idx1-ubyte.gz: cannot read it"):
        read_idx(gz, 1)


def test_mnist_mismatched_or_missing_files(tmp_path):
    write_mnist(str(tmp_path))
    write_idx(str(tmp_path / "t10k-labels-idx1-ubyte"), np.zeros(5))
    with pytest.raises(ValueError, match="holds 6 images but .*t10k-labels-idx1-ubyte holds 5 labels"):
        read_mnist(str(tmp_path))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: file not found"):
        read_mnist(str(tmp_path))
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset("mnist")


def test_mnist_test_images_of_another_size_fail_on_load(tmp_path):
    """Found before training starts, not after an epoch."""
    write_mnist(str(tmp_path))
    write_idx(str(tmp_path / "t10k-images-idx3-ubyte"), np.zeros((6, 32, 32)))
    with pytest.raises(ValueError, match=r"test split: images of shape \(1, 32, 32\), but the "
                                         r"training images are \(1, 28, 28\)"):
        load_dataset("mnist", str(tmp_path))
    write_mnist(str(tmp_path), n_test=0)
    with pytest.raises(ValueError, match="test split is empty"):
        load_dataset("mnist", str(tmp_path))


# ----------------------------------------------------------------------------- CIFAR-10 binary batches

def write_cifar(folder, n=3):
    os.makedirs(folder, exist_ok=True)
    gen = np.random.default_rng(0)
    contents = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = gen.integers(0, 10, n).astype(np.uint8)
        images = gen.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        rec = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(rec.tobytes())
        contents[name] = (images, labels)
    return contents


def test_cifar10_reader(tmp_path):
    contents = write_cifar(str(tmp_path / "cifar-10-batches-bin"))
    ds = load_dataset("cifar10", str(tmp_path), val_fraction=0.0)  # the parent folder works too
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    images, labels = contents["data_batch_2.bin"]
    np.testing.assert_allclose(ds.x_train[3:6] * 255, images, atol=1e-4)  # channels red, green, blue
    np.testing.assert_array_equal(ds.y_test, contents["test_batch.bin"][1])
    assert ds.flip and ds.crop_padding == 4
    same = read_cifar10(str(tmp_path / "cifar-10-batches-bin"))
    np.testing.assert_array_equal(same[1], ds.y_train)


def test_cifar10_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(str(folder))
    path = folder / "data_batch_3.bin"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"data_batch_3.bin: \d+ bytes is not a whole number of records"):
        read_cifar10(str(tmp_path))
    bad = bytearray(raw)
    bad[CIFAR_RECORD] = 200  # the second record's label byte
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="data_batch_3.bin: label byte 200 found; expected a CIFAR-10"):
        read_cifar10(str(tmp_path))
    os.remove(folder / "test_batch.bin")
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="test_batch.bin: file not found; expected a CIFAR-10 binary batch"):
        read_cifar10(str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
