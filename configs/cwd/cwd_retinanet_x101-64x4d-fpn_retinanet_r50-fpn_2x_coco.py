# CWD: RetinaNet X101-64x4d-FPN (teacher) -> RetinaNet R50-FPN 2x (student) on COCO.
# Recipe: pppppM/mmdetection-distiller configs/distillers/cwd/
#   cwd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py (37.4 -> 40.5 box mAP)
# Channel-wise divergence on the FPN levels P3-P6 (neck.fpn_convs.0-3; P7 is not distilled
# there), tau 1, loss weight 5 per level; no inheriting, no grad clip; 2x schedule, SGD lr 0.01.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']  # student, data, 2x schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmdet model zoo, box AP 41.0), download into checkpoints/:
# https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_x101_64x4d_fpn_1x_coco/retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth  # noqa: E501
teacher_ckpt = 'checkpoints/retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth'

model = dict(
    _delete_=True,
    _scope_='mmdet',  # its library's registry, also when inherited as mmdistill::
    type='DistillDetector',
    student=_base_.model,
    teacher=dict(
        config='mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        # one CWDLoss per listed level, summed (each level weighted 5, as in the recipe).
        cwd_fpn=dict(
            type='CWDLoss',
            student=['neck[0]', 'neck[1]', 'neck[2]', 'neck[3]'],
            teacher=['neck[0]', 'neck[1]', 'neck[2]', 'neck[3]'],
            tau=1.0,
            loss_weight=5.0)))
