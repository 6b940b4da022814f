#!/usr/bin/env bash
# The wheel on a machine that has only the wheel (not the clone): build it, install it into a
# fresh venv on top of the installed OpenMMLab stack, then from a directory outside the clone:
# `mim search mmdistill`, a user config inheriting `mmdistill::fgd/...` (tiny models, coco_tiny)
# trained 2 iterations with `mim train`, tested with `mim test`, exported with
# `mim run mmdistill export_student`, the export loaded by stock mmdet, and `mmdistill::` as a
# teacher config. Not in CI (a few minutes, installs openmim): run it by hand.
#   bash tools/check_wheel_install.sh [VENV] [DATA_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-/tmp/venv-mmd}
DATA=$(cd "${2:-$ROOT/../shared/data}" && pwd)
WORK=$(mktemp -d)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
step() { echo; echo "== $*"; }

step "build the wheel"
python3 -m pip wheel -q --no-deps --no-build-isolation "$ROOT" -w "$WORK/dist" 2>&1 | grep -v '^WARNING: Location' || true
rm -rf "$ROOT/build"
WHEEL=$(ls "$WORK"/dist/mmdistill-*.whl)
echo "$WHEEL"

step "venv $VENV (system site packages), openmim and the wheel (CI's versions as constraints)"
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
PIP="$VENV/bin/python -m pip install -q --disable-pip-version-check -c $ROOT/requirements/ci-constraints.txt"
$PIP openmim 2>&1 | grep -v '^WARNING: Location' || true
$PIP --force-reinstall --no-deps "$WHEEL" 2>&1 | grep -v '^WARNING: Location' || true
$PIP "$WHEEL" 2>&1 | grep -v '^WARNING: Location' || true   # its dependencies: already satisfied
export PATH="$VENV/bin:$PATH"
cd "$WORK"   # outside the clone: only the installed wheel can be imported
python -W ignore -c "import mmdistill, sys; print(mmdistill.__file__, mmdistill.__version__); assert '$ROOT' not in mmdistill.__file__"

step "mim search mmdistill"
mim search mmdistill > search.txt 2> /dev/null
sed -n 1,14p search.txt
grep -q 'config id: fgd_retinanet_x101-64x4d-fpn_retinanet_r50-fpn_2x_coco' search.txt
echo "configs listed: $(grep -c '^config id:' search.txt) (shipped: $(ls "$ROOT"/configs/*/*.py | wc -l))"

step "a user config inheriting mmdistill::fgd/..., tiny models, coco_tiny"
cat > user_fgd_tiny.py <<PYEOF
_base_ = ['mmdistill::fgd/fgd_retinanet_x101-64x4d-fpn_retinanet_r50-fpn_2x_coco.py']
data_root = '$DATA/coco_tiny/'


def tiny_retinanet(width, fpn):
    return dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=width, num_stages=4,
                      out_indices=(0, 1, 2, 3), style='pytorch'),
        neck=dict(type='FPN', in_channels=[width, width * 2, width * 4, width * 8],
                  out_channels=fpn, start_level=1, add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=80, in_channels=fpn, stacked_convs=1, feat_channels=fpn,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
                       debug=False),
        test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.001,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=50))


model = dict(
    student=dict(_delete_=True, **tiny_retinanet(16, 32)),
    teacher=dict(_delete_=True, config=dict(model=tiny_retinanet(32, 64)),
                 checkpoint='$WORK/teacher.pth'),
    init_student=False,
    distill_losses=dict(fgd_fpn=dict(student_channels=32, teacher_channels=64)))
scale = (256, 192)
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'),
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                           dict(type='Resize', scale=scale, keep_ratio=True), dict(type='PackDetInputs')]))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'),
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=scale, keep_ratio=True),
                           dict(type='LoadAnnotations', with_bbox=True),
                           dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                                 'img_shape', 'scale_factor'))]))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=1000)
param_scheduler = []
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2), logger=dict(interval=1))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='TeacherEvalHook')]
PYEOF
python -W ignore - > teacher_build.log 2>&1 <<PYEOF || { tail -30 teacher_build.log; exit 1; }
import torch, mmdistill
from mmengine.config import Config
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
register_all_modules()
cfg = Config.fromfile('user_fgd_tiny.py')
assert cfg.model.type == 'DistillDetector' and cfg.model._scope_ == 'mmdet', cfg.model
teacher = MODELS.build(cfg.model.teacher.config.model)
teacher.init_weights()
torch.save({'state_dict': teacher.state_dict()}, '$WORK/teacher.pth')
print('user config loads; tiny teacher saved')
PYEOF
tail -n1 teacher_build.log

step "mim train mmdistill (2 iterations)"
mim train mmdistill user_fgd_tiny.py --work-dir "$WORK/run" 2>&1 | grep -E "Teacher on the validation|Iter\(train\)|Error|error" | tail -6
test -f "$WORK/run/iter_2.pth"

step "mim test mmdistill (the student alone)"
mim test mmdistill user_fgd_tiny.py --checkpoint "$WORK/run/iter_2.pth" --work-dir "$WORK/test" 2>&1 | grep -E "bbox_mAP_copypaste|Error|error" | tail -3

step "mim run mmdistill export_student"
mim run mmdistill export_student user_fgd_tiny.py "$WORK/run/iter_2.pth" "$WORK/student.pth" --student-config "$WORK/student.py" 2>&1 | grep -E "wrote|Error|error" | tail -3
python -W ignore -c "
from mmdet.apis import init_detector
model = init_detector('$WORK/student.py', '$WORK/student.pth', device='cpu')
print('stock mmdet loads the export:', type(model).__name__)"

step "mmdistill:: as a teacher config (a distilled student as the teacher)"
python -W ignore -c "
import mmdistill
from mmdistill.teacher import load_teacher_config, model_config
cfg = load_teacher_config('mmdistill::fgd/fgd_gfl_r101-fpn_gfl_r50-fpn_1x_coco.py', 'model.teacher.config')
print('teacher model:', model_config(cfg)['type'])"
echo; echo "wheel install check passed ($WORK)"
