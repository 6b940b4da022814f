"""Compiled loss cores (``compiled=True``): the eager values and gradients in float64, one graph
for every FPN level and image size, and the eager form when compiling fails."""
import pytest
import torch

from mmdistill.losses.compiled import CompiledFn
from mmdistill.losses.cwd import CWDLoss, channel_kl

LEVELS = [(2, 4, 9, 13), (2, 4, 5, 7), (2, 4, 3, 4), (2, 4, 2, 2), (2, 4, 1, 1)]


def _inductor_works() -> bool:
    try:
        torch.compile(lambda x: x * 2, dynamic=True)(torch.ones(3))
        return True
    except Exception:
        return False


needs_inductor = pytest.mark.skipif(not _inductor_works(), reason='torch.compile unavailable')


@needs_inductor
@pytest.mark.parametrize('make', [lambda c: CWDLoss(tau=2.0, loss_weight=3.0, compiled=c),
                                  lambda c: CWDLoss(compiled=c)])
def test_compiled_equals_eager_in_float64_on_every_level(make):
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    eager, fast = make(False).double(), make(True).double()
    for shape in LEVELS:
        s = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        t = torch.randn(*shape, dtype=torch.float64)
        ref = eager(s, t)
        g_ref, = torch.autograd.grad(ref, s)
        out = fast(s, t)
        g, = torch.autograd.grad(out, s)
        assert float(out) == pytest.approx(float(ref), rel=1e-10, abs=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-12)
    # one graph for all five shapes; 1x1 maps are specialised by dynamo at most once more
    assert counters['stats']['unique_graphs'] <= 2, dict(counters['stats'])


def test_compiling_failure_falls_back_to_eager(monkeypatch):
    calls = []

    def broken(fn, dynamic):
        def run(*args):
            calls.append('compiled')
            raise RuntimeError('no C++ compiler')
        return run

    monkeypatch.setattr(torch, 'compile', broken)
    fn = CompiledFn(channel_kl.fn)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.equal(fn(a, b, 1.0, compiled=True), channel_kl.fn(a, b, 1.0))
    assert fn.failed.startswith('RuntimeError: no C++ compiler')
    fn(a, b, 1.0, compiled=True)
    assert calls == ['compiled']  # not tried again
