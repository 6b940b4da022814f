# CWD: GFL R101-FPN (ms 2x teacher) -> GFL R50-FPN 1x (student) on COCO.
# Recipe: mmrazor 0.x configs/distill/cwd/cwd_cls_head_gfl_r101_fpn_gfl_r50_fpn_1x_coco.py
#   (40.2 -> 41.9 box mAP; the mmrazor 1.x file of that name keeps the published numbers).
# Channel-wise divergence on the classification logits of the GFL head: bbox_head.gfl_cls
# runs once per FPN level (5 calls, each (N, 80, H, W)); tau 1, loss weight 5 per level;
# no inheriting, no grad clip; 1x schedule, SGD lr 0.01 (as in mmdet's GFL base).
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']  # student, data, 1x schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmdet model zoo, box AP 44.7), download into checkpoints/:
# https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth  # noqa: E501
teacher_ckpt = 'checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'

model = dict(
    _delete_=True,
    _scope_='mmdet',  # its library's registry, also when inherited as mmdistill::
    type='DistillDetector',
    student=_base_.model,
    teacher=dict(
        config='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        # a tap on a module that runs once per level, without an index, gives every call:
        # one CWDLoss per level, summed.
        cwd_cls_head=dict(
            type='CWDLoss',
            student='bbox_head.gfl_cls',
            teacher='bbox_head.gfl_cls',
            tau=1.0,
            loss_weight=5.0)))
