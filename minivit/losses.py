"""Losses: each a forward that returns a scalar and a backward that returns d(loss)/d(logits)."""

from . import backend
from .nn.activation import log_softmax


def _check_logits_labels(logits, labels):
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, classes), got shape {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must be ({logits.shape[0]},) to match logits, got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")


class CrossEntropyLoss:
    """L = -(1/B) sum_b sum_c q_bc log softmax(z_b)_c, with smoothed targets
    q = (1 - eps) onehot(y) + eps / K (label smoothing eps, K classes; eps = 0 is plain CE).

    Shapes: logits z (B, K), labels y (B,) integers -> scalar.
    Backward: d/dz of -sum_c q_c log p_c with sum_c q_c = 1 is p - q, so dL/dz = (p - q) / B.
    """

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._saved = None

    def targets(self, labels, num_classes, dtype, xp):
        B = labels.shape[0]
        q = xp.full((B, num_classes), self.label_smoothing / num_classes, dtype=dtype)
        q[xp.arange(B), labels] += 1.0 - self.label_smoothing
        return q

    def forward(self, logits, labels):
        xp = backend.xp_of(logits)
        labels = xp.asarray(labels)
        _check_logits_labels(logits, labels)
        logp = log_softmax(logits)
        q = self.targets(labels, logits.shape[1], logits.dtype, xp)
        self._saved = (logp, q)
        return -(q * logp).sum() / logits.shape[0]

    def backward(self, dout=1.0):
        if self._saved is None:
            raise RuntimeError("CrossEntropyLoss.backward() called before forward()")
        logp, q = self._saved
        self._saved = None
        xp = backend.xp_of(logp)
        return (xp.exp(logp) - q) * (dout / logp.shape[0])

    __call__ = forward
