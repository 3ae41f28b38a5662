"""E_pos at another resolution: bicubic resampling over the patch grid, as the references do."""

import numpy as np


def _cubic(t, a):
    """Keys' cubic convolution kernel W(t) (a = -0.75 in PyTorch's bicubic, -0.5 in PIL's and
    PyTorch's antialiased one)."""
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((t - 5) * t + 8) * t * a - 4 * a, 0.0))


def resize_weights(n_in, n_out, antialias=False):
    """The (n_out, n_in) matrix of bicubic resampling along one axis, as PyTorch's
    ``interpolate(mode="bicubic", align_corners=False)`` computes it: output pixel i samples the
    input at x = (i + 1/2) n_in / n_out - 1/2. Plain (transformers): a = -0.75 on the four
    nearest pixels, indices clamped at the border. Antialiased (timm: ``antialias=True``):
    a = -0.5, the kernel stretched by the scale when shrinking, truncated at the border and
    renormalised."""
    scale = n_in / n_out
    centre = (np.arange(n_out) + 0.5) * scale  # (n_out,), in input pixels
    W = np.zeros((n_out, n_in))
    if not antialias:
        x = centre - 0.5
        base = np.floor(x).astype(int)
        for k in range(-1, 3):
            np.add.at(W, (np.arange(n_out), np.clip(base + k, 0, n_in - 1)), _cubic(x - (base + k), -0.75))
        return W
    stretch = max(scale, 1.0)
    j = np.arange(n_in)
    W = _cubic((j[None, :] + 0.5 - centre[:, None]) / stretch, -0.5)  # zero beyond the support
    return W / W.sum(axis=1, keepdims=True)


def resample_pos_embed(pos_embed, num_prefix_tokens, grid, antialias=False):
    """E_pos (1, k + g*g, D) -> (1, k + gh*gw, D): the patch part resampled bicubically from the
    g x g grid to ``grid`` = (gh, gw), the k prefix tokens' positions kept."""
    k = num_prefix_tokens
    prefix, patches = pos_embed[:, :k], pos_embed[0, k:]
    g = int(round(np.sqrt(patches.shape[0])))
    if g * g != patches.shape[0]:
        raise ValueError(f"E_pos has {patches.shape[0]} patch positions: not a square grid")
    table = patches.reshape(g, g, -1).astype(np.float64)  # (g, g, D)
    rows, cols = resize_weights(g, grid[0], antialias), resize_weights(g, grid[1], antialias)
    out = np.einsum("ai,bj,ijd->abd", rows, cols, table)  # (gh, gw, D)
    return np.concatenate([prefix, out.reshape(1, -1, out.shape[-1]).astype(pos_embed.dtype)], axis=1)
