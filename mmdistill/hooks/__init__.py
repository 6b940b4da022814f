"""mmengine hooks: CTKD's temperature curriculum, exact resume state, per-rank loss dumps,
loss balance."""
from .ctkd_hook import CTKDTemperatureHook
from .distill_balance_hook import DistillBalanceHook
from .distill_state_hook import DistillStateHook
from .dump_losses_hook import DumpLossesHook

__all__ = ['CTKDTemperatureHook', 'DistillBalanceHook', 'DistillStateHook', 'DumpLossesHook']
