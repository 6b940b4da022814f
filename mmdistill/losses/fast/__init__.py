"""Fast forms of losses whose definition lives in ``mmdistill/losses/<method>.py``.

Each computes the same function as its definition with fewer passes over the feature maps
(blocked eager passes, compiled kernels, hand-written CPU kernels, a hand-written backward); the
loss class decides when its fast form runs, and the tests compare the two in float64.

* :mod:`.fgd` (with :mod:`.fgd_kernel`, :mod:`.fgd_blocked`, :mod:`.fgd_compiled`): FGD from a
  few reductions,
* :mod:`.cwd` (with :mod:`.cwd_kernel`): CWD's divergence and its gradient in one pass,
* :mod:`.at`: AT's channel mean with a one-pass backward,
* :mod:`.compiled`: compile-or-eager wrapper of a core; :mod:`.value_and_grad`: the autograd node
  of a core that returns its own gradient; :mod:`.cpu_kernel`: builds and loads the C++ kernels
  (``*_kernel.cpp``, ``cpu_tasks.h``) for the machine.
"""
