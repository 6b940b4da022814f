# FGD: Faster R-CNN R101-FPN 2x (teacher) -> Faster R-CNN R50-FPN 2x (student) on COCO.
# Official recipe: yzd-v/FGD configs/distillers/fgd/
#   fgd_faster_rcnn_r101_fpn_2x_distill_faster_rcnn_r50_fpn_2x_coco.py
# FGD on the 4 FPN levels P2-P5 (neck.fpn_convs.0-3; the max-pooled P6 is not distilled),
# two-stage weights: temp 0.5, alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7;
# the student inherits the teacher's neck, RPN and RoI heads; 2x schedule, SGD lr 0.02,
# grad clip 35.
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
    # copy the teacher's neck, rpn_head and roi_head into the student (inheriting strategy)
    init_student=True,
    distill_losses=dict(
        # one FGDLoss (own GcBlocks) per listed level, summed.
        fgd_fpn=dict(
            type='FGDLoss',
            student=['neck[0]', 'neck[1]', 'neck[2]', 'neck[3]'],
            teacher=['neck[0]', 'neck[1]', 'neck[2]', 'neck[3]'],
            student_channels=256,
            teacher_channels=256,
            temp=0.5,
            alpha_fgd=0.00005,
            beta_fgd=0.000025,
            gamma_fgd=0.00005,
            lambda_fgd=0.0000005)))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
