# %% [markdown]
# # Assignment 5: DeiT's distillation losses
#
# DeiT trains a student ViT from a teacher's predictions as well as from the labels. Its loss
# has two terms, weighed by $\alpha$: the cross-entropy of the class token's logits with the
# labels, and a distillation term on the distillation token's logits.
#
# | task | file | points |
# |---|---|---|
# | a5.soft.forward, a5.soft.backward | minivit/losses.py (`SoftDistillationLoss`) | 3 + 3 |
# | a5.hard.forward | minivit/losses.py (`HardDistillationLoss`) | 1 |
# | a5.combine.forward, a5.combine.backward | minivit/losses.py (`_DistillationLoss`) | 2 + 2 |

# %%
import matplotlib.pyplot as plt
import numpy as np

from minivit.classroom import check, start_notebook
from minivit.losses import HardDistillationLoss, SoftDistillationLoss

start_notebook()  # in Jupyter: reload minivit's files when you edit them; minivit's figure style

# %% [markdown]
# ## 1. Soft distillation
#
# $$L = (1 - \alpha)\,\mathrm{CE}(z_\text{cls}, y) + \alpha\, \tau^2\, \mathrm{KL}(p_T \,\|\, p_S),
#   \quad p_T = \operatorname{softmax}(z_T / \tau), \; p_S = \operatorname{softmax}(z_\text{dist} / \tau).$$
#
# The temperature $\tau$ softens both distributions so the student learns the teacher's
# ranking of the wrong classes too. The gradient with respect to $z_\text{dist}$ is
# $\tau (p_S - p_T) / B$: the $\tau^2$ makes up for the $1/\tau$ of each softened logit.

# %%
check("a5.soft.forward")
check("a5.soft.backward")

# %% [markdown]
# ## 2. Hard distillation, and the two terms together
#
# $L = (1 - \alpha)\,\mathrm{CE}(z_\text{cls}, y) + \alpha\,\mathrm{CE}(z_\text{dist}, y_T)$ with
# $y_T = \arg\max_c z_{T,c}$, a constant: the teacher gets no gradient. Both losses share the
# weighting of the two terms, forward and backward.

# %%
check("a5.hard.forward")
check("a5.combine.forward")
check("a5.combine.backward")
gen = np.random.default_rng(0)
z_cls, z_dist, z_teacher = (gen.standard_normal((64, 10)) for _ in range(3))
labels = gen.integers(0, 10, size=64)
taus = np.linspace(0.5, 6, 30)
soft = [SoftDistillationLoss(alpha=1.0, tau=t).forward(z_cls, z_dist, labels, z_teacher) for t in taus]
hard = HardDistillationLoss(alpha=1.0).forward(z_cls, z_dist, labels, z_teacher)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(taus, soft, label="soft: tau^2 KL(p_T || p_S)")
ax.axhline(hard, color="gray", linestyle="--", label="hard: CE(z_dist, argmax z_T)")
ax.set(xlabel="temperature tau", ylabel="distillation term (nats)",
       title="Your distillation terms on random logits")
ax.legend()
plt.show()
