"""Analysis of a distillation run: how the losses balance against the student's own."""
from .balance import loss_balance, sum_losses

__all__ = ['loss_balance', 'sum_losses']
