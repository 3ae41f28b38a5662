"""The known mistakes of each task, and what to tell a student who makes one.

A mistake is written as edits of the library's own body of the task (each ``old`` text occurs
once in it): the grader runs the edited library through the task's probe and, when a student's
code behaves exactly as it does, gives its message. This file is the teacher's: a student's
folder is built without it (its edits quote the solutions).
"""

from collections import namedtuple

Mistake = namedtuple("Mistake", "edits message")  # edits: [(old, new)] of the library's body

MISTAKES = {
    "a1.linear.forward": [
        Mistake([('y = y + self.bias.data', 'y = y')],
                'y is missing the bias: y = x W + b'),
    ],
    "a1.linear.backward": [
        Mistake([('x2.T @ g', 'g.T @ x2')],
                "dL/dW has W's shape (D_in, D_out): it is x^T g, not g^T x"),
        Mistake([('g.sum(axis=0)', 'g.mean(axis=0)')],
                'dL/db adds up the gradients of every row (every token of every image); a mean divides '
                'them'),
    ],
    "a1.layernorm.forward": [
        Mistake([('x.var(axis=-1, keepdims=True)', 'x.var(axis=-1, ddof=1, keepdims=True)')],
                "the variance divides by D - 1 (unbiased); LayerNorm's divides by D"),
        Mistake([('y = self.weight.data * x_hat + self.bias.data', 'y = x_hat')],
                'y is x_hat: the learned scale gamma and shift beta are missing'),
    ],
    "a1.normalize.backward": [
        Mistake([(" - g.mean(axis=axis, keepdims=True) - x_hat * (g * x_hat).mean(axis=axis, keepdims=True)",
                  "")],
                "dx is missing the terms through mu and sigma, which depend on x too: "
                "sigma dx = g - mean(g) - x_hat mean(g x_hat)"),
        Mistake([(" - x_hat * (g * x_hat).mean(axis=axis, keepdims=True)", "")],
                "dx is missing the term through sigma: - x_hat mean(g x_hat)"),
    ],
    "a1.layernorm.backward": [
        Mistake([("g = dout * self.weight.data", "g = dout")],
                "dx forgets gamma: the gradient reaching x_hat is g = gamma * dL/dy"),
        Mistake([("(dout * x_hat).reshape(-1, d).sum(axis=0)", "dout.reshape(-1, d).sum(axis=0)")],
                "dL/dgamma is the sum of dL/dy * x_hat: gamma multiplies x_hat"),
    ],
    "a1.gelu.forward": [
        Mistake([('backend.normal_cdf(x)', '0.5 * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))')],
                'this is the tanh approximation; the exact GELU is x Phi(x), Phi(x) = (1 + erf(x / sqrt '
                '2)) / 2'),
    ],
    "a1.gelu.backward": [
        Mistake([('(s + x * phi)', 's')],
                'dx is missing x phi(x): d/dx [x Phi(x)] = Phi(x) + x phi(x) (product rule)'),
    ],
    "a1.softmax.forward": [
        Mistake([('exp(x - x.max(axis=axis, keepdims=True))', 'exp(x)')],
                "exp overflows for large logits: subtract each row's max first (softmax is shift-"
                'invariant)'),
    ],
    "a1.softmax.backward": [
        Mistake([('y * (dy - (dy * y).sum(axis=axis, keepdims=True))', 'y * dy')],
                'dx is missing the row sum: every output depends on every input, dx = y (dy - sum(dy y))'),
    ],
    "a2.attention.forward": [
        Mistake([('q.shape[-1] ** -0.5 if self.scale is None else self.scale', '1.0')],
                'the scores are not scaled by 1/sqrt(d): the softmax saturates as d grows'),
        Mistake([('xp.where(mask, s, -xp.inf)', 'xp.where(mask, s, 0.0)')],
                'masked scores set to 0 still get probability: set them to -inf, so exp gives 0'),
    ],
    "a2.attention.backward": [
        Mistake([('ds = softmax_backward(a, da)', 'ds = da')],
                'dS skips the softmax: go back through it with softmax_backward(A, dA)'),
        Mistake([("dq = (ds @ k) * scale", "dq = ds @ k"),
                 ("dk = (ds.swapaxes(-1, -2) @ q) * scale", "dk = ds.swapaxes(-1, -2) @ q")],
                'dq and dk miss the scale 1/sqrt(d) that multiplied the scores'),
    ],
    "a2.heads.forward": [
        Mistake([("reshape(-1, N, 3, h, d).transpose(2, 0, 3, 1, 4)",
                  "reshape(-1, N, h, 3, d).transpose(3, 0, 2, 1, 4)")],
                "qkv's D-wide column blocks are q, k and v, each cut into h heads: reshape to (B, N, 3, "
                'h, d), not (B, N, h, 3, d)'),
        Mistake([('out.transpose(0, 2, 1, 3).reshape(*lead, N, D)', 'out.reshape(*lead, N, D)')],
                'the heads are merged without moving the head axis back: (B, h, N, d) to (B, N, h, d) '
                'first'),
    ],
    "a2.heads.backward": [
        Mistake([('dqkv.transpose(1, 3, 0, 2, 4)', 'dqkv.transpose(1, 3, 2, 0, 4)')],
                "d[q, k, v] must be laid out as qkv's output, (B, N, 3, h, d), before qkv's backward"),
    ],
    "a3.patchify.forward": [
        Mistake([("transpose(0, 2, 4, 1, 3, 5)", "transpose(0, 2, 4, 3, 5, 1)")],
                "each patch is flattened in (c, i, j) order, channels first, so that x_p E is the stride-P "
                "convolution with kernel E^T reshaped to (D, C, P, P)"),
        Mistake([("x = x.transpose(0, 2, 4, 1, 3, 5)", "pass")],
                "a reshape without the transpose mixes pixels of different patches: move the patch-grid "
                "axes in front, (B, H/P, W/P, C, P, P), then flatten"),
    ],
    "a3.patchify.backward": [
        Mistake([("transpose(0, 3, 1, 4, 2, 5)", "transpose(0, 2, 4, 1, 3, 5)")],
                "the inverse of the forward's transpose (0, 2, 4, 1, 3, 5) is (0, 3, 1, 4, 2, 5), not the "
                "same permutation again"),
    ],
    "a3.class_token.forward": [
        Mistake([("out[:, :k] = self.weight.data", "out[:, -k:] = self.weight.data"),
                 ("out[:, k:] = z", "out[:, :-k] = z")],
                "the class token goes first, [x_class; z]: the head reads token 0"),
    ],
    "a3.class_token.backward": [
        Mistake([("dout[:, :k].sum(axis=0, keepdims=True)", "dout[:, :k].mean(axis=0, keepdims=True)")],
                "every image uses the same token: its gradient is the sum over the batch, not the mean"),
    ],
    "a3.position.backward": [
        Mistake([("dout.sum(axis=0, keepdims=True)", "dout[:1]")],
                "E_pos is added to every image of the batch: sum dout over the batch, not only the first"),
    ],
    "a3.block.forward": [
        Mistake([("z = z + self.drop_path1", "z = self.drop_path1")],
                "the attention branch is added to its input: z' = z + MSA(LN(z)), a residual connection"),
    ],
    "a3.block.backward": [
        Mistake([("dz = d + self.norm1.backward(dz)", "dz = self.norm1.backward(dz)")],
                "a residual y = x + f(x) passes dL/dy straight through as well: "
                "dL/dx = dL/dy + f'(x)^T dL/dy"),
    ],
    "a4.window.partition": [
        Mistake([(".transpose(0, 1, 3, 2, 4, 5)", "")],
                "a reshape alone cuts rows, not windows: move the window-grid axes together first, "
                "(B, H/M, W/M, M, M, C)"),
    ],
    "a4.window.reverse": [
        Mistake([(".transpose(0, 1, 3, 2, 4, 5)", "")],
                "undo the partition's transpose before the reshape to (B, H, W, C): (B, H/M, M, W/M, M, C)"),
    ],
    "a4.shift_mask": [
        Mistake([("0.0, -100.0", "-100.0, 0.0")],
                "the mask is inverted: 0 where query and key come from the same region, -100 where not"),
        Mistake([(".transpose(0, 2, 1, 3)", "")],
                "cut the labels into windows as window_partition cuts the tokens, (H/M, W/M, M, M): "
                "a reshape alone takes rows, not windows"),
    ],
    "a4.relative_index": [
        Mistake([("dr * (2 * M - 1) + dc", "dr * M + dc")],
                "row offsets step by 2M - 1, the number of column offsets, not by M"),
    ],
    "a4.relative_bias.forward": [
        Mistake([("reshape(n, n, -1).transpose(2, 0, 1)", "reshape(-1, n, n)")],
                "the gathered rows are (n*n, heads): reshape to (n, n, heads), then move the heads first"),
    ],
    "a4.relative_bias.backward": [
        Mistake([("backend.scatter_add(self.table.grad, self.index.reshape(-1), g)",
                  "self.table.grad[self.index.reshape(-1)] += g")],
                "a += through a repeated index adds each row once: the table's rows are shared by many "
                "(i, j), add up every use (backend.scatter_add)"),
    ],
    "a5.soft.forward": [
        Mistake([("self.tau**2 * ", "")],
                "the KL term is multiplied by tau^2, which keeps its gradient's scale as tau grows"),
        Mistake([("(p_t * (log_p_t - log_p_s))", "(p_s * (log_p_s - log_p_t))")],
                "the KL is the wrong way round: KL(p_T || p_S) weighs by the teacher's probabilities"),
    ],
    "a5.soft.backward": [
        Mistake([("self.tau * dout", "dout")],
                "the gradient of tau^2 KL is tau (p_S - p_T) / B: tau^2 times the 1/tau of the softened "
                "logits"),
    ],
    "a5.hard.forward": [
        Mistake([("argmax(axis=1)", "argmax(axis=0)")],
                "the teacher's label of an image is the argmax over the classes, axis 1"),
    ],
    "a5.combine.forward": [
        Mistake([("(1.0 - self.alpha) * ce + self.alpha * self.distill",
                  "self.alpha * ce + (1.0 - self.alpha) * self.distill")],
                "alpha weighs the distillation term: (1 - alpha) CE + alpha L_distill"),
    ],
    "a5.combine.backward": [
        Mistake([("self.ce.backward((1.0 - self.alpha) * dout)", "self.ce.backward(dout)")],
                "each term's gradient carries its weight: (1 - alpha) for the cross-entropy"),
    ],
}


def mistaken_body(body, mistake):
    """The library's ``body`` (lines) with ``mistake``'s edits made; each edit's text must occur once."""
    text = "\n".join(body)
    for old, new in mistake.edits:
        if text.count(old) != 1:
            raise ValueError(f"a mistake's edit expects {old!r} once in the body, found {text.count(old)}")
        text = text.replace(old, new)
    return text.split("\n")
