"""Compiled loss forms (``compiled=True``): the eager values and gradients in float64, one graph
for every FPN level and image size, and the eager form when compiling fails."""
import copy

import pytest
import torch

from mmdistill.losses.at import ATLoss
from mmdistill.losses.cwd import CWDLoss, channel_kl
from mmdistill.losses.fast.compiled import CompiledFn
from mmdistill.losses.fast.cwd import channel_kl_and_grad
from mmdistill.losses.fast.value_and_grad import value_and_grad
from mmdistill.losses.fgd import FGDLoss

LEVELS = [(2, 4, 9, 13), (2, 4, 5, 7), (2, 4, 3, 4), (2, 4, 2, 2), (2, 4, 1, 1)]
BOXES = [torch.tensor([[10., 20, 60, 90], [5, 5, 30, 40]]), torch.tensor([[0., 0, 50, 50]])]


def _inductor_works() -> bool:
    try:
        torch.compile(lambda x: x * 2, dynamic=True)(torch.ones(3))
        return True
    except Exception:
        return False


needs_inductor = pytest.mark.skipif(not _inductor_works(), reason='torch.compile unavailable')


def _fgd(c: int, compiled: bool = False) -> FGDLoss:
    """FGD with every term non-trivial (random GcBlock add convs, as after some training)."""
    torch.manual_seed(3)
    m = FGDLoss(c, c, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6,
                compiled=compiled, cpu_kernel=False)  # the compiled and the eager passes
    with torch.no_grad():
        for block in (m.channel_add_conv_s, m.channel_add_conv_t):
            torch.nn.init.normal_(block[-1].weight, std=0.05)
            torch.nn.init.normal_(block[-1].bias, std=0.05)
    return m


CASES = {
    'cwd-tau2': (lambda c: CWDLoss(tau=2.0, compiled=c, cpu_kernel=False), False),
    'cwd': (lambda c: CWDLoss(compiled=c, cpu_kernel=False), False),
    'cwd-align': (lambda c: CWDLoss(student_channels=4, teacher_channels=6, compiled=c,
                                    cpu_kernel=False), False),
    'at': (lambda c: ATLoss(compiled=c), False),
    'at-p3': (lambda c: ATLoss(p=3, compiled=c), False),
    'fgd': (lambda c: _fgd(4, c), True),
}


def _run(module, s, t, boxes, weight):
    """Loss, student gradient and parameter gradients of ``weight * module(s, t)``."""
    module.zero_grad(set_to_none=True)
    s.grad = None
    args = (boxes, (128, 192)) if boxes else ()
    out = module(s, t, *args)
    (weight * out).backward()
    grads = [p.grad for p in module.parameters()]
    return out.detach(), s.grad.clone(), grads


@needs_inductor
@pytest.mark.parametrize('name', list(CASES))
def test_compiled_equals_eager_in_float64_on_every_level(name):
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    make, boxes = CASES[name]
    torch.manual_seed(0)
    eager = make(False).double()
    fast = copy.deepcopy(eager)
    fast.compiled = True
    t_channels = 6 if name == 'cwd-align' else 4
    for k, shape in enumerate(LEVELS):
        s = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        t = torch.randn(shape[0], t_channels, *shape[2:], dtype=torch.float64)
        weight = 1.0 if k % 2 else 0.7  # the loss summed into the total, or weighted
        boxes64 = [b.double() for b in BOXES] if boxes else None
        ref, g_ref, p_ref = _run(eager, s, t, boxes64, weight)
        out, g, p = _run(fast, s, t, boxes64, weight)
        assert float(out) == pytest.approx(float(ref), rel=1e-10, abs=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-12)
        assert len(p) == len(p_ref)
        for a, b in zip(p, p_ref):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    # one graph per compiled core for all five shapes; 1x1 maps may be specialised once more
    cores = {'cwd-tau2': 1, 'cwd': 1, 'cwd-align': 1, 'at': 2, 'at-p3': 2, 'fgd': 4}[name]
    assert counters['stats']['unique_graphs'] <= 2 * cores, dict(counters['stats'])


@needs_inductor
def test_value_and_grad_without_a_gradient_computes_the_value_only():
    s, t = torch.randn(6, 20, dtype=torch.float64), torch.randn(6, 20, dtype=torch.float64)
    ref = channel_kl(s, t, 2.0) * 0.5
    with torch.no_grad():
        out = value_and_grad(channel_kl_and_grad, s.requires_grad_(), t, 2.0, 0.5, compiled=True)
    assert not out.requires_grad
    assert float(out) == pytest.approx(float(ref), rel=1e-12)
    value, grad = channel_kl_and_grad.fn(s.detach(), t, 2.0, 0.5, False)
    assert grad is None and float(value) == pytest.approx(float(ref), rel=1e-12)


def test_value_and_grad_gradient_is_the_autograd_one():
    """The hand-written gradient of the CWD core equals autograd's through ``channel_kl``."""
    s = torch.randn(6, 20, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 20, dtype=torch.float64)
    g_ref, = torch.autograd.grad(channel_kl(s, t, 3.0) * 0.25 * 5.0, s)
    g, = torch.autograd.grad(value_and_grad(channel_kl_and_grad, s, t, 3.0, 0.25) * 5.0, s)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-14)


def test_value_and_grad_weighted_twice_through_a_retained_graph():
    """A weighted loss differentiated twice (DistillBalanceHook does): the same gradient."""
    s = torch.randn(6, 20, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 20, dtype=torch.float64)
    g_ref, = torch.autograd.grad(channel_kl(s, t, 2.0) * 0.5 * 3.0, s)
    out = value_and_grad(channel_kl_and_grad, s, t, 2.0, 0.5) * 3.0
    g1, = torch.autograd.grad(out, s, retain_graph=True)
    g2, = torch.autograd.grad(out, s)
    torch.testing.assert_close(g1, g_ref, rtol=1e-10, atol=1e-14)
    assert torch.equal(g1, g2)


def test_compiling_failure_falls_back_to_eager(monkeypatch):
    calls = []

    def broken(fn, dynamic):
        def run(*args):
            calls.append('compiled')
            raise RuntimeError('no C++ compiler')
        return run

    monkeypatch.setattr(torch, 'compile', broken)
    fn = CompiledFn(channel_kl_and_grad.fn)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    value, grad = fn(a, b, 1.0, 2.0, True, compiled=True)
    ref_value, ref_grad = channel_kl_and_grad.fn(a, b, 1.0, 2.0, True)
    assert torch.equal(value, ref_value) and torch.equal(grad, ref_grad)
    assert fn.failed.startswith('RuntimeError: no C++ compiler')
    fn(a, b, 1.0, 2.0, True, compiled=True)
    assert calls == ['compiled']  # not tried again
