"""mmengine hooks: CTKD's temperature curriculum, exact resume state, per-rank loss dumps,
loss balance, the teacher's metrics before training."""
from .ctkd_hook import CTKDTemperatureHook
from .distill_balance_hook import DistillBalanceHook
from .distill_state_hook import DistillStateHook
from .dump_losses_hook import DumpLossesHook
from .teacher_eval_hook import TeacherEvalHook, teacher_predictions

__all__ = ['CTKDTemperatureHook', 'DistillBalanceHook', 'DistillStateHook', 'DumpLossesHook',
           'TeacherEvalHook', 'teacher_predictions']
