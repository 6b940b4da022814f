# LD: GFL R101-FPN (ms 2x teacher) -> GFL R18-FPN 1x (student) on COCO.
# Official recipe: mmdet configs/ld/ld_r18-gflv1-r101_fpn_1x_coco.py (from HikariTJU/LD)
#   (35.8 -> 36.5 box mAP): LD (KnowledgeDistillationKLDivLoss, T 10, weight 0.25) on the box
#   distributions (reg_max 16) of all 5 levels; the student is GFL with a ResNet-18 (LDHead is
#   GFLHead + LD); no inheriting, no grad clip; 1x schedule, SGD lr 0.01 (mmdet's GFL base).
# LD's region here is the gt boxes' cells, not LDHead's ATSS positives: see LDLoss.
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']  # data, 1x schedule, GFL (R50 -> R18 below)

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmdet model zoo, box AP 44.7), download into checkpoints/:
# https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth  # noqa: E501
teacher_ckpt = 'checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'

model = dict(
    _delete_=True,
    _scope_='mmdet',  # its library's registry, also when inherited as mmdistill::
    type='DistillDetector',
    # GFL R18-FPN, as the student of mmdet's LD config
    student=dict(
        _base_.model,
        backbone=dict(_base_.model.backbone, depth=18,
                      init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
        neck=dict(_base_.model.neck, in_channels=[64, 128, 256, 512])),
    teacher=dict(
        config='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        # the box logits of each level after its Scale (what LDHead distils): one LDLoss per
        # level, summed
        ld_bbox_head=dict(
            type='LDLoss',
            student=[f'bbox_head.scales.{i}' for i in range(5)],
            teacher=[f'bbox_head.scales.{i}' for i in range(5)],
            loss_weight=0.25,
            T=10,
            reg_max=16)))
