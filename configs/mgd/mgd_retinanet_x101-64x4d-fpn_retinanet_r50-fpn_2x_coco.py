# MGD: RetinaNet X101-64x4d-FPN (teacher) -> RetinaNet R50-FPN 2x (student) on COCO.
# Official recipe: yzd-v/MGD det/configs/distillers/mgd/
#   retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py (37.4 -> 41.0 box mAP), reproduced
#   by mmrazor's mgd_fpn_retina_x101_retina_r50_2x_coco.py (41.0) with the 1x teacher below.
# MGD on all 5 FPN levels, alpha_mgd 2e-5, lambda_mgd 0.65; the student inherits the
# teacher's neck and head; 2x schedule, SGD lr 0.01, grad clip 35.
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
    # copy the teacher's neck and bbox_head into the student (inheriting strategy)
    init_student=True,
    distill_losses=dict(
        # 'neck' yields the 5 FPN levels P3-P7: one MGDLoss (own generation block) per level.
        mgd_fpn=dict(
            type='MGDLoss',
            student='neck',
            teacher='neck',
            student_channels=256,
            teacher_channels=256,
            alpha_mgd=0.00002,
            lambda_mgd=0.65)))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
