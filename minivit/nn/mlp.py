"""The transformer's position-wise feed-forward network."""

from .. import backend
from .activation import GELU
from .linear import Linear
from .module import Module
from .regularize import Dropout


class MLP(Module):
    """MLP(z) = GELU(z W_1 + b_1) W_2 + b_2, applied to every token independently.

    Shapes: z (B, N, D) -> hidden (B, N, D_hidden) -> (B, N, D); D_hidden = mlp_ratio * D
    (4D in ViT). W_1 = fc1.weight (D, D_hidden), W_2 = fc2.weight (D_hidden, D).
    Backward: the chain rule through fc2, GELU and fc1, each layer's own backward in reverse.
    """

    def __init__(self, dim, hidden_dim, drop=0.0, approximate="none", rng=None, dtype=None):
        gen = backend.rng(rng)
        self.fc1 = Linear(dim, hidden_dim, rng=gen, dtype=dtype)
        self.act = GELU(approximate)
        self.drop1 = Dropout(drop, rng=gen)
        self.fc2 = Linear(hidden_dim, dim, rng=gen, dtype=dtype)
        self.drop2 = Dropout(drop, rng=gen)

    def forward(self, z):
        h = self.drop1.forward(self.act.forward(self.fc1.forward(z)))  # (B, N, D_hidden)
        return self.drop2.forward(self.fc2.forward(h))  # (B, N, D)

    def backward(self, dout):
        d = self.fc2.backward(self.drop2.backward(dout))
        return self.fc1.backward(self.act.backward(self.drop1.backward(d)))
