"""The pre-norm encoder block: z' = z + MSA(LN(z)); z'' = z' + MLP(LN(z'))."""

import numpy as np
from conftest import npy, randn, randomize

from minivit import nn


def test_forward_is_two_pre_norm_residual_branches():
    gen = np.random.default_rng(0)
    blk = randomize(nn.Block(8, 2, mlp_ratio=2.0, dtype="float64"), gen)
    z = randn(gen, 2, 5, 8)
    z1 = z + blk.attn.forward(blk.norm1.forward(z))
    expected = z1 + blk.mlp.forward(blk.norm2.forward(z1))
    np.testing.assert_allclose(npy(blk.forward(z)), npy(expected), rtol=1e-14, atol=1e-14)


def test_zero_branches_make_the_identity():
    gen = np.random.default_rng(1)
    blk = randomize(nn.Block(8, 4, dtype="float64"), gen)
    for layer in (blk.attn.proj, blk.mlp.fc2):
        layer.weight.data[...] = 0.0
        layer.bias.data[...] = 0.0
    z, g = randn(gen, 2, 3, 8), randn(gen, 2, 3, 8)
    np.testing.assert_array_equal(npy(blk.forward(z)), npy(z))
    np.testing.assert_array_equal(npy(blk.backward(g)), npy(g))  # the residual passes dL/dz through


def test_options_reach_the_sublayers():
    blk = nn.Block(12, 3, mlp_ratio=3.0, qkv_bias=False, drop=0.1, attn_drop=0.2, drop_path=0.3,
                   eps=1e-5, approximate="tanh")
    assert blk.attn.num_heads == 3 and blk.attn.qkv.bias is None and blk.mlp.fc1.out_features == 36
    assert blk.attn.attn.attn_drop.p == 0.2 and blk.attn.proj_drop.p == 0.1 and blk.mlp.drop1.p == 0.1
    assert blk.drop_path1.p == 0.3 and blk.drop_path2.p == 0.3
    assert blk.norm1.eps == 1e-5 and blk.mlp.act.approximate == "tanh"


def test_drop_path_skips_whole_branches_per_sample():
    gen = np.random.default_rng(2)
    blk = randomize(nn.Block(4, 2, drop_path=0.6, rng=5, dtype="float64"), gen)
    z = randn(gen, 400, 3, 4)
    y = npy(blk.forward(z))
    unchanged = np.all(y == npy(z), axis=(1, 2))  # both branches dropped: the sample passes as is
    assert abs(unchanged.mean() - 0.6**2) < 0.08  # two independent draws, 400 samples (std ~0.024)
    blk.eval()
    assert not np.any(np.all(npy(blk.forward(z)) == npy(z), axis=(1, 2)))
