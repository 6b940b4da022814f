"""The feature analysis tools on the tiny FGD config (quick: coco_tiny, 1 batch or 1 image):
feature_similarity.py gives a CKA per FPN level for each checkpoint, in [0, 1], a table,
cka.json and cka.png; visualize_features.py one PNG per image."""
import json
import os.path as osp

import pytest

from tests.conftest import ROOT, SHARED_DATA
from tests.test_tools.test_pipeline import run

pytest.importorskip('mmdet')


CONFIG = osp.join(ROOT, 'tests', 'data', 'fgd_retinanet_tiny_coco-tiny.py')


@pytest.fixture
def teacher(tmp_path):
    from mmengine.config import Config

    from tests.utils import save_teacher
    if not osp.isdir(osp.join(SHARED_DATA, 'coco_tiny')):
        pytest.skip('needs ../shared/data/coco_tiny')
    path = str(tmp_path / 'teacher.pth')
    save_teacher(Config.fromfile(CONFIG).model.teacher.config.model, path)
    return path


def test_feature_similarity_quick(tmp_path, teacher):
    from mmengine.config import Config

    from tests.utils import save_teacher
    config = CONFIG
    cfg = Config.fromfile(config)
    # the student's weights from another init, saved as a plain state dict
    (tmp_path / 'other').mkdir()
    student = str(tmp_path / 'other' / 'student.pth')
    save_teacher(cfg.model.student, student, seed=3)
    out = str(tmp_path / 'out')
    log = run('tools/analysis/feature_similarity.py', config, '--checkpoint', student,
              '--num-batches', '1', '--out', out, '--cfg-options',
              f'model.teacher.checkpoint={teacher}')
    assert '| tap [level] | CKA, other/student.pth |' in log, log[-2000:]
    with open(osp.join(out, 'cka.json')) as f:
        results = json.load(f)['results']['other/student.pth']
    assert sorted(results) == [f'neck [{i}]' for i in range(5)]
    assert all(0 <= v <= 1 for v in results.values())
    assert osp.getsize(osp.join(out, 'cka.png')) > 10_000


def test_visualize_features_quick(tmp_path, teacher):
    out = str(tmp_path / 'maps')
    log = run('tools/analysis/visualize_features.py', CONFIG, '--num-images', '1', '--out', out,
              '--cfg-options', f'model.teacher.checkpoint={teacher}')
    written = [line.split(' ', 1)[1] for line in log.splitlines() if line.startswith('wrote ')]
    assert len(written) == 1 and osp.getsize(written[0]) > 20_000, log[-2000:]
