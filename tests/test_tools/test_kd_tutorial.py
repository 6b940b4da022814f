"""The PyTorch KD tutorial track: the registered networks are the tutorial's (its printed
parameter counts, its hidden representations), and a quick run of all four rows (CI smoke)."""
import json
import os.path as osp

import pytest
import torch

from tests.conftest import SHARED_DATA

pytest.importorskip('mmpretrain')
pytestmark = pytest.mark.skipif(not osp.isdir(osp.join(SHARED_DATA, 'cifar10')),
                                reason='needs ../shared/data/cifar10')


def build(name):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    from tools.experiments.kd_tutorial import tutorial_net
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # whatever scope tests left
        return MODELS.build(tutorial_net(name))


def test_networks_are_the_tutorials():
    deep, light = build('DeepNN'), build('LightNN')
    # the tutorial prints "DeepNN parameters: 1,186,986" and "LightNN parameters: 267,738"
    assert sum(p.numel() for p in deep.parameters()) == 1186986
    assert sum(p.numel() for p in light.parameters()) == 267738
    x = torch.randn(2, 3, 32, 32)
    feats = deep.backbone.features(x)
    assert feats.shape == (2, 32, 8, 8)
    seen = {}
    deep.backbone.hidden.register_forward_hook(lambda m, i, o: seen.setdefault('h', o))
    deep.eval()
    logits = deep(x, mode='tensor')
    assert logits.shape == (2, 10)
    # the tutorial's ModifiedDeepNNCosine: avg_pool1d(flatten(features), 2)
    torch.testing.assert_close(seen['h'], torch.nn.functional.avg_pool1d(feats.flatten(1), 2))
    assert light.backbone.features(x).shape == (2, 16, 8, 8)


def test_quick_tutorial_track(tmp_path):
    from tools.analysis.distill_study import main
    work = str(tmp_path / 'study')
    main(['--quick', '--tracks', 'tutorial', '--seeds', '0', '--work-dir', work])
    with open(osp.join(work, 'results', 'study.json')) as f:
        (track, ) = json.load(f)['tracks']
    assert [r['key'] for r in track['rows']] == ['alone', 'kd', 'cosine', 'regressor']
    for row in track['rows'][1:]:
        assert row['baseline'] == 'alone' and row['ratio'] > 0
