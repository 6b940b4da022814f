"""The teachers: a trained model built from its config and checkpoint (frozen), or the student's
exponential moving average (EMA self-distillation).

* :mod:`.spec`: which teachers the config asks for;
* :mod:`.loading`: config and strict checkpoint to a frozen model;
* :mod:`.ema`: the student's moving average;
* :mod:`.renorm`: the student's inputs in the teacher's normalisation;
* :mod:`.teacher`: the runtime :class:`Teacher` (precision, memory format, recording, scope);
* :mod:`.state`: the distiller's state-dict hooks for the teachers' state;
* :mod:`.inherit`: ``init_student``'s copy of teacher weights.
"""
from .inherit import inherit_weights
from .loading import build_teacher, load_teacher_config, model_config
from .spec import is_ema, teacher_specs
from .state import load_teacher_state, save_teacher_state
from .teacher import Teacher, check_autocast

__all__ = ['Teacher', 'build_teacher', 'check_autocast', 'inherit_weights', 'is_ema',
           'load_teacher_config', 'load_teacher_state', 'model_config', 'save_teacher_state',
           'teacher_specs']
