"""python -m minivit predict: top-k labels of image files from a transformers folder (the same
as transformers' own prediction) or a minivit checkpoint, the rollout figure, clear errors; and
python -m minivit analyze, the three analysis figures."""

import numpy as np
import pytest
from conftest import hf_model
from PIL import Image

from minivit.__main__ import main


def digit_image(path):
    paper = np.full((64, 64), 255, np.uint8)
    paper[8:56, 26:38] = 0  # a dark "1" on white paper
    Image.fromarray(paper).save(path)
    return str(path)


def photo(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3)).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    assert main(["train", "--out", str(out), "--model", "vit_digits_cls", "--epochs", "2", "--quiet"]) == 0
    return out


def parse(text):
    """{image: [(label, probability)]} from predict's output."""
    results, current = {}, None
    for line in text.splitlines():
        if line.startswith("  "):
            pct, label = line.split(maxsplit=1)
            results[current].append((label, float(pct.rstrip("%")) / 100))
        else:
            current = line
            results[current] = []
    return results


def test_predict_with_a_minivit_checkpoint_and_explain(digits_run, tmp_path, capsys):
    img = digit_image(tmp_path / "one.png")
    figure = tmp_path / "why.png"
    assert main(["predict", img, img, "--model", str(digits_run / "best.npz"), "--top", "3",
                 "--explain", str(figure)]) == 0
    (top,) = parse(capsys.readouterr().out).values()  # the same file twice: one entry
    assert len(top) == 3 and {label for label, _ in top} <= set("0123456789")
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert figure.stat().st_size > 0


def test_predict_with_a_transformers_folder_equals_transformers(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref = hf_model(image_size=32, num_labels=5)
    ref.save_pretrained(tmp_path / "model")
    processor = transformers.ViTImageProcessorPil(size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path / "model")
    images = [photo(tmp_path / f"p{i}.png", i) for i in range(2)]
    assert main(["predict", *images, "--model", str(tmp_path / "model"), "--top", "5"]) == 0
    got = parse(capsys.readouterr().out)
    with torch.no_grad():
        pixels = processor([Image.open(p) for p in images], return_tensors="pt")["pixel_values"]
        probs = ref(pixels).logits.softmax(-1).numpy()
    for img, p in zip(images, probs, strict=True):
        expected = [(ref.config.id2label[int(c)], p[c]) for c in np.argsort(-p)]
        assert [label for label, _ in got[img]] == [label for label, _ in expected]
        np.testing.assert_allclose([q for _, q in got[img]], [q for _, q in expected], atol=6e-5)


@pytest.mark.parametrize("args,message", [
    (["--top", "0"], "--top must be an integer >= 1, got 0"),
    (["--explain", "why.jpg"], "--explain why.jpg: expected a .png file name"),
])
def test_bad_flags_are_one_line(digits_run, tmp_path, capsys, args, message):
    img = digit_image(tmp_path / "one.png")
    assert main(["predict", img, "--model", str(digits_run / "best.npz"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minivit: error: ") and message in err and err.count("\n") == 1


def test_bad_paths_are_one_line(digits_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    ckpt = str(digits_run / "best.npz")
    cases = [([str(tmp_path / "missing.png")], ckpt, "no such image file"),
             ([str(tmp_path / "notes.txt")], ckpt, "is not an image Pillow can read"),
             ([digit_image(tmp_path / "one.png")], str(tmp_path / "notes.txt"),
              "expected a transformers folder")]
    for images, model, message in cases:
        assert main(["predict", *images, "--model", model]) == 2
        err = capsys.readouterr().err
        assert err.startswith("minivit: error: ") and message in err, err


def test_analyze_writes_the_three_figures_and_never_overwrites(digits_run, tmp_path, capsys):
    img = digit_image(tmp_path / "one.png")
    out = tmp_path / "figures"
    assert main(["analyze", img, "--model", str(digits_run / "best.npz"), "--out", str(out)]) == 0
    names = ("rollout.png", "attention_distance.png", "pos_embed_similarity.png")
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    before = (out / "rollout.png").read_bytes()
    assert main(["analyze", img, "--model", str(digits_run / "best.npz"), "--out", str(out)]) == 2
    assert "already holds rollout.png" in capsys.readouterr().err
    assert (out / "rollout.png").read_bytes() == before
