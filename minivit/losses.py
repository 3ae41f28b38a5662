"""Losses: each a forward that returns a scalar and a backward that returns d(loss)/d(logits).

CrossEntropyLoss for plain training; SoftDistillationLoss and HardDistillationLoss for DeiT
(Touvron et al., 2021), whose backward returns the gradients of both student heads."""

import math

from . import backend
from .nn.activation import log_softmax


def _check_logits_labels(logits, labels):
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, classes), got shape {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must be ({logits.shape[0]},) to match logits, got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and not (0 <= int(labels.min()) and int(labels.max()) < logits.shape[1]):
        raise ValueError(  # a negative label would otherwise silently index from the end
            f"labels must be class indices in [0, {logits.shape[1]}), "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


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

    def floor(self, num_classes):
        """The least value the loss takes, reached where softmax(z) = q: the entropy of the target,
        H(q) = -(1 - eps + eps/K) log(1 - eps + eps/K) - (K - 1)(eps/K) log(eps/K); 0 for eps = 0."""
        eps, K = self.label_smoothing, num_classes
        if eps == 0:
            return 0.0
        top = 1.0 - eps + eps / K
        return float(-top * math.log(top) - (K - 1) * (eps / K) * math.log(eps / K))

    __call__ = forward


class _DistillationLoss:
    """(1 - alpha) CE(z_cls, y) + alpha L_distill(z_dist, z_T): the part both DeiT losses share.

    forward(z_cls, z_dist, labels, z_teacher) -> scalar; backward(dout=1.0) -> (dz_cls, dz_dist).
    The teacher is a constant: it gets no gradient. A student without a distillation token passes
    its class logits twice (z_cls = z_dist = z) and adds the two gradients: dL/dz = dz_cls + dz_dist.
    Subclasses give the distillation term: ``distill(z_dist, z_teacher)`` and ``distill_backward(dout)``.
    """

    def __init__(self, alpha, label_smoothing=0.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.ce = CrossEntropyLoss(label_smoothing)
        self._forward_ran = False  # one backward per forward

    def forward(self, z_cls, z_dist, labels, z_teacher):
        xp = backend.xp_of(z_cls)
        if z_dist.shape != z_cls.shape:
            raise ValueError(
                f"z_dist must have the shape of z_cls {tuple(z_cls.shape)}, got {tuple(z_dist.shape)}"
            )
        z_teacher = xp.asarray(z_teacher, dtype=z_dist.dtype)
        if z_teacher.ndim != 2 or z_teacher.shape[0] != z_cls.shape[0]:
            raise ValueError(
                f"teacher logits must be ({z_cls.shape[0]}, classes), got shape {tuple(z_teacher.shape)}"
            )
        if z_teacher.shape[1] != z_cls.shape[1]:
            raise ValueError(
                f"the teacher predicts {z_teacher.shape[1]} classes but the student {z_cls.shape[1]}: "
                "a teacher must have the student's classes"
            )
        ### BEGIN SOLUTION a5.combine.forward
        ce = self.ce.forward(z_cls, labels)
        loss = (1.0 - self.alpha) * ce + self.alpha * self.distill(z_dist, z_teacher)
        ### END SOLUTION
        self._forward_ran = True
        return loss

    def backward(self, dout=1.0):
        if not self._forward_ran:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        self._forward_ran = False
        ### BEGIN SOLUTION a5.combine.backward
        dz_cls = self.ce.backward((1.0 - self.alpha) * dout)
        dz_dist = self.distill_backward(self.alpha * dout)
        ### END SOLUTION
        return dz_cls, dz_dist

    __call__ = forward


class SoftDistillationLoss(_DistillationLoss):
    """DeiT's soft distillation (Hinton et al., 2015):

        L = (1 - alpha) CE(z_cls, y) + alpha tau^2 KL(p_T || p_S),
        p_T = softmax(z_T / tau),  p_S = softmax(z_dist / tau),
        KL(p_T || p_S) = (1/B) sum_b sum_c p_T,bc (log p_T,bc - log p_S,bc).

    Shapes: z_cls, z_dist, z_T (B, K), labels y (B,) -> scalar.
    Backward: only log p_S depends on z_dist, and d/du of -sum_c p_T,c log softmax(u)_c is
    p_S - p_T (as in CE), with u = z_dist / tau adding a factor 1/tau. So
    d(tau^2 KL)/dz_dist = tau^2 (p_S - p_T) / (tau B) = tau (p_S - p_T) / B.
    tau^2 keeps that gradient's scale independent of tau as tau grows.
    """

    def __init__(self, alpha=0.5, tau=1.0, label_smoothing=0.0):
        super().__init__(alpha, label_smoothing)
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = tau

    def distill(self, z_dist, z_teacher):
        xp = backend.xp_of(z_dist)
        ### BEGIN SOLUTION a5.soft.forward
        log_p_s = log_softmax(z_dist / self.tau)  # (B, K)
        log_p_t = log_softmax(z_teacher / self.tau)  # (B, K)
        p_t = xp.exp(log_p_t)
        p_s = xp.exp(log_p_s)
        loss = self.tau**2 * (p_t * (log_p_t - log_p_s)).sum() / z_dist.shape[0]  # tau^2 KL(p_T || p_S)
        ### END SOLUTION
        self._saved = (p_s, p_t)
        return loss

    def distill_backward(self, dout):
        p_s, p_t = self._saved
        self._saved = None
        ### BEGIN SOLUTION a5.soft.backward
        dz_dist = (p_s - p_t) * (self.tau * dout / p_s.shape[0])
        ### END SOLUTION
        return dz_dist


class HardDistillationLoss(_DistillationLoss):
    """DeiT's hard-label distillation: the teacher's decision is a second label.

        L = (1 - alpha) CE(z_cls, y) + alpha CE(z_dist, y_T),   y_T = argmax_c z_T,c.

    (DeiT uses alpha = 1/2.) Shapes: z_cls, z_dist, z_T (B, K), labels y (B,) -> scalar.
    Backward: y_T is a constant (argmax has no gradient), so each term is a plain cross-entropy:
    dL/dz_cls = (1 - alpha) (softmax(z_cls) - q) / B, dL/dz_dist = alpha (softmax(z_dist) - onehot(y_T)) / B.
    Label smoothing, if any, applies to the true labels only (the teacher's labels stay hard).
    """

    def __init__(self, alpha=0.5, label_smoothing=0.0):
        super().__init__(alpha, label_smoothing)
        self.ce_teacher = CrossEntropyLoss()

    def distill(self, z_dist, z_teacher):
        ### BEGIN SOLUTION a5.hard.forward
        y_teacher = z_teacher.argmax(axis=1)  # (B,): the teacher's decisions, constants
        ### END SOLUTION
        return self.ce_teacher.forward(z_dist, y_teacher)

    def distill_backward(self, dout):
        return self.ce_teacher.backward(dout)
