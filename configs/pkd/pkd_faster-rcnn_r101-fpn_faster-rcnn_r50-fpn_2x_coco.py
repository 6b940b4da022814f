# PKD: Faster R-CNN R101-FPN (teacher) -> Faster R-CNN R50-FPN 2x (student) on COCO.
# Recipe: mmrazor configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py
#   (38.4 -> 40.3 box mAP).
# PKD on all 5 FPN levels (P2-P6), loss weight 6; the student inherits the teacher's neck and
# heads (same architecture above the backbone); 2x schedule, SGD lr 0.02 (mmdet's base).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py']  # student, data, 2x schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmdet model zoo, box AP 39.8), download into checkpoints/:
# https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth  # noqa: E501
teacher_ckpt = 'checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'  # noqa: E501

model = dict(
    _delete_=True,
    _scope_='mmdet',  # its library's registry, also when inherited as mmdistill::
    type='DistillDetector',
    student=_base_.model,
    teacher=dict(
        config='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        checkpoint=teacher_ckpt),
    init_student=True,
    distill_losses=dict(
        pkd_fpn=dict(
            type='PKDLoss',
            student='neck',
            teacher='neck',
            loss_weight=6.0,
            resize_stu=True)))
