"""Looking inside a ViT: where it attends, how far, and what its position code learned.

Numbers only (host NumPy arrays); the figures are ``minivit.viz``'s. Each function runs the
model's own forward in eval mode and reads every block's attention probabilities A (B, h, N, N),
which ``MultiHeadSelfAttention`` keeps as ``attn_probs``; the model's mode is restored after.
The k = ``model.num_prefix_tokens`` class (and distillation) tokens come first, then the
N' = grid_h * grid_w patch tokens in row-major order.
"""

import numpy as np

from . import backend, validate

HEAD_FUSIONS = {"mean": np.mean, "max": np.max, "min": np.min}


def require_vit(model):
    """A clear error for a model these functions cannot read: they follow one sequence of tokens
    through global attention (ViT, DeiT); Swin attends within windows that move between blocks."""
    if "blocks" not in getattr(model, "_modules", {}) or "patch_embed" not in model._modules:
        raise ValueError(f"attention analysis reads a ViT's or DeiT's global attention over one token "
                         f"sequence; got a {type(model).__name__}, which it does not cover")


def attention_probs(model, x):
    """[A_1, ..., A_L]: each block's attention probabilities for images ``x``, (B, h, N, N)."""
    require_vit(model)
    was_training = model.training
    model.eval()
    try:
        model.forward(x)
    finally:
        model.train(was_training)
    return [backend.to_numpy(blk.attn.attn_probs).astype(np.float64) for blk in model.blocks]


def _grid(model):
    g = model.patch_embed.grid_size
    return g, g


def attention_rollout(model, x, head_fusion="mean", discard_ratio=0.0):
    """Attention rollout (Abnar & Zuidema, 2020): how much each patch reaches the class token.

    Per block l, from A_l (B, h, N, N): fuse the heads, F_l = mean, max or min over h (B, N, N);
    optionally zero the n = floor(discard_ratio * N^2) smallest entries of each image's F_l,
    except F_l[0, 0], the class token's attention to itself, which is kept when it is among them
    (then n - 1 are zeroed), as the widely used reference implementation does; add the residual
    path and renormalise the rows, A'_l = rownorm(F_l / 2 + I / 2); then R = A'_L ... A'_1.
    Returns the class token's row of R over the patch tokens, R[0, k:], as (B, grid_h, grid_w),
    not renormalised. A model without a class token (mean pooling, k = 0) has no such row: it
    returns the mean of R's rows, as its pooling reads every patch token, and spares no entry.
    """
    validate.choice("head_fusion", head_fusion, tuple(HEAD_FUSIONS))
    validate.probability("discard_ratio", discard_ratio)
    k = model.num_prefix_tokens
    attn = attention_probs(model, x)
    B, _, N, _ = attn[0].shape
    eye = np.eye(N)
    R = np.broadcast_to(eye, (B, N, N))
    for A in attn:
        F = HEAD_FUSIONS[head_fusion](A, axis=1)  # (B, N, N)
        n = int(N * N * discard_ratio)
        if n:
            flat = F.reshape(B, N * N).copy()  # (B, N^2)
            np.put_along_axis(flat, np.argsort(flat, axis=1, kind="stable")[:, :n], 0.0, axis=1)
            if k:
                flat[:, 0] = F[:, 0, 0]  # F[0, 0] is never dropped
            F = flat.reshape(B, N, N)
        A_res = 0.5 * F + 0.5 * eye
        R = (A_res / A_res.sum(axis=-1, keepdims=True)) @ R  # A'_l R
    row = R[:, 0, k:] if k else R.mean(axis=1)  # (B, N')
    return row.reshape(B, *_grid(model))


def patch_distances(model):
    """(N', N') distances in pixels between the centres of the patches (row-major grid)."""
    gh, gw = _grid(model)
    r, c = np.divmod(np.arange(gh * gw), gw)
    P = model.patch_embed.patch_size
    return P * np.hypot(r[:, None] - r[None], c[:, None] - c[None])


def mean_attention_distance(model, x):
    """Mean attention distance per block and head, in pixels (the ViT paper's Figure 7, right):

        dist_lh = mean over images b and query patches i of sum_j A_lh[b, i, j] d_ij,

    A_lh (B, N, N) block l's head h; i and j over the N' patch tokens only (the prefix tokens'
    rows and columns are dropped); d_ij (N', N') the distance between the centres of patches i
    and j in pixels. A is not renormalised over the patches: the share a patch gives the prefix
    tokens counts as no distance, as in the common reference implementations. Returns
    (depth, heads).
    """
    k, d = model.num_prefix_tokens, patch_distances(model)
    return np.stack([(A[:, :, k:, k:] * d).sum(axis=-1).mean(axis=(0, 2))  # (h,) per block
                     for A in attention_probs(model, x)])


def pos_embed_similarity(model):
    """Cosine similarity of the patch positions' embeddings (the ViT paper's Figure 7, centre):
    S_ij = <e_i, e_j> / (|e_i| |e_j|) over the rows e of E_pos's patch part. Returns (N', N');
    row i reshaped to (grid_h, grid_w) shows how alike position i is to every position."""
    require_vit(model)
    learned = getattr(model.pos_embed, "weight", None)  # a fixed sin-cos table has no Parameter
    table = model.pos_embed.table if learned is None else learned.data
    e = backend.to_numpy(table)[0, model.num_prefix_tokens:].astype(np.float64)  # (N', D)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return e @ e.T
