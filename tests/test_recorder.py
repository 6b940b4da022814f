import pytest
import torch
from torch import nn

from mmdistill.recorder import FeatureRecorder, Tap, find_module


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.shared = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.layers(x)
        return [self.shared(y), self.shared(y * 2), self.shared(y * 3)], (y, y + 1)

    def split(self, x):
        return self.layers(x), self.layers(x) + 1


def test_parse():
    assert Tap.parse('neck[0]') == Tap('neck', 0)
    assert Tap.parse('backbone.layer4') == Tap('backbone.layer4', None)
    assert Tap.parse('layers.0') == Tap('layers.0', None)
    assert Tap.parse('bbox_head.retina_cls[-1]') == Tap('bbox_head.retina_cls', -1)
    with pytest.raises(ValueError, match='model.distill_losses.x.student'):
        Tap.parse('neck[a]', 'model.distill_losses.x.student')


def test_missing_module_lists_candidates():
    with pytest.raises(ValueError) as err:
        find_module(Net(), 'layers.3', 'model.distill_losses.x.student', 'student')
    msg = str(err.value)
    assert 'model.distill_losses.x.student' in msg and "'layers.3'" in msg
    assert 'layers.0' in msg and 'layers.1' in msg


def test_call_index_vs_element_index():
    net = Net()
    taps = [(Tap('layers.0'), 'k'), (Tap('shared', 1), 'k')]
    rec = FeatureRecorder(net, taps, 'student')
    x = torch.randn(1, 3, 2, 2)
    with rec.recording():
        net(x)
        conv0 = net.layers[0](x)
        # 'layers.0' ran twice: once in forward, once above -> call index
        assert torch.equal(rec.get(Tap('layers.0', 1), 'k')[0], conv0)
        assert len(rec.get(Tap('shared'), 'k')) == 3  # all calls, as levels
        with pytest.raises(IndexError, match='ran 3 times'):
            rec.get(Tap('shared', 3), 'k')
        y = net.layers(x)
        assert torch.allclose(rec.get(Tap('shared', 1), 'k')[0], net.shared(y * 2))
    with rec.recording():
        assert rec._outputs == {}


def test_element_index_and_range():
    net = nn.Sequential()
    net.add_module('body', nn.Identity())
    body = net.body
    rec = FeatureRecorder(net, [(Tap('body', 0), 'key.s')], 'teacher')
    a, b = torch.ones(1), torch.zeros(1)
    with rec.recording():
        body((a, b))
        assert rec.get(Tap('body', 1), 'key.s')[0] is b
        assert len(rec.get(Tap('body'), 'key.s')) == 2
        with pytest.raises(IndexError, match=r'key.s.*returns 2 outputs'):
            rec.get(Tap('body', 2), 'key.s')
    with rec.recording():
        body(a)
        with pytest.raises(IndexError, match='single Tensor'):
            rec.get(Tap('body', 0), 'key.s')
    with rec.recording():
        with pytest.raises(RuntimeError, match='did not run'):
            rec.get(Tap('body'), 'key.s')
    # outside recording nothing is stored
    body(a)
    assert rec._outputs == {}


def test_keep_only_holds_just_the_tapped_parts():
    net = Net()
    taps = [Tap('shared', 1), Tap('layers', None)]
    rec = FeatureRecorder(net, [(t, 'k') for t in taps], 'teacher')
    x = torch.randn(1, 3, 2, 2)
    with rec.recording():
        net(x)
        rec.keep_only(taps)
    with rec.recording():
        (a, b, c), _ = net(x)
        held = rec._outputs['shared']
        assert len(held) == 3 and held[0] is None and held[2] is None
        assert torch.equal(rec.get(Tap('shared', 1), 'k')[0], b)
    body = nn.Sequential()
    body.add_module('m', nn.Identity())
    rec = FeatureRecorder(body, [(Tap('m', -2), 'k')], 'teacher')
    parts = (torch.ones(1), torch.zeros(1), torch.full((1,), 2.))
    with rec.recording():
        body.m(parts)
        rec.keep_only([Tap('m', -2)])
    with rec.recording():
        body.m(parts)
        assert rec.get(Tap('m', -2), 'k')[0] is parts[1]
        assert set(rec._outputs['m'][0]._items) == {1}  # elements 0 and 2 are not held


def test_output_changed_in_place_is_noticed_and_then_copied():
    """A norm output that an in-place ReLU overwrites: get() refuses the changed values;
    run_recorded() re-runs with the tap recorded as a copy, which holds the pre-activation."""
    from mmdistill.recorder import run_recorded
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    rec = FeatureRecorder(net, [(Tap('1'), 'k')], 'student')
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with rec.recording():
        net(x)
        assert rec.mutated() == ['1']
        with pytest.raises(RuntimeError, match=r"k: the student changed the output of '1' in"):
            rec.get(Tap('1'), 'k')
    with rec.recording():
        assert run_recorded([rec], lambda: net(x)) == ['student 1']
        assert rec.copied == {'1'} and rec.mutated() == []
        pre = rec.get(Tap('1'), 'k')[0]
        torch.testing.assert_close(pre, net[1](net[0](x)))
        assert (pre < 0).any()
        pre.sum().backward()  # the copy stays in the graph
        assert x.grad is not None
    with rec.recording():  # from now on every step records a copy
        out = net(x)
        assert rec.get(Tap('1'), 'k')[0] is not out and run_recorded([rec], lambda: None) == []


def test_paused_records_nothing():
    net = Net()
    rec = FeatureRecorder(net, [(Tap('shared'), 'k')], 'teacher')
    x = torch.randn(1, 3, 2, 2)
    with rec.recording():
        net(x)
        with rec.paused():
            net.shared(torch.randn(1, 4, 2, 2))
        assert len(rec.get(Tap('shared'), 'k')) == 3
