"""Fast forms of losses whose definition lives in ``mmdistill/losses/<method>.py``.

Each computes the same function as its definition with fewer passes over the feature maps
(blocked eager passes, compiled kernels, a hand-written backward); the loss class decides when
its fast form runs, and the tests compare the two in float64.

* :mod:`.fgd` (with :mod:`.fgd_blocked`, :mod:`.fgd_compiled`): FGD from a few reductions,
* :mod:`.cwd`: CWD's divergence and its gradient in one compiled pass,
* :mod:`.at`: AT's channel mean with a one-pass backward,
* :mod:`.compiled`: compile-or-eager wrapper of a core; :mod:`.value_and_grad`: the autograd node
  of a core that returns its own gradient.
"""
