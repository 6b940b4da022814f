"""Analysis of a distillation run: how the losses balance against the student's own, and how
similar the student's features are to the teacher's (linear CKA)."""
from .balance import grad_norm, loss_balance, sum_losses
from .cka import LinearCKA, linear_cka

__all__ = ['LinearCKA', 'grad_norm', 'linear_cka', 'loss_balance', 'sum_losses']
