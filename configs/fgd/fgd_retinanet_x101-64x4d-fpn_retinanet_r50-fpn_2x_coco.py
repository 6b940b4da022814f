# FGD: RetinaNet X101-64x4d-FPN (teacher) -> RetinaNet R50-FPN 2x (student) on COCO.
# Official recipe: yzd-v/FGD configs/distillers/fgd/
#   fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py  (37.4 -> 40.7 box mAP)
# FGD on all 5 FPN levels, temp 0.5, alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6;
# the student inherits the teacher's neck and head; 2x schedule, SGD lr 0.01, grad clip 35.
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
    # copy the teacher's neck and bbox_head into the student (FGD's inheriting strategy)
    init_student=True,
    distill_losses=dict(
        # 'neck' yields the 5 FPN levels P3-P7: one FGDLoss (own GcBlocks) per level, summed.
        fgd_fpn=dict(
            type='FGDLoss',
            student='neck',
            teacher='neck',
            student_channels=256,
            teacher_channels=256,
            temp=0.5,
            alpha_fgd=0.001,
            beta_fgd=0.0005,
            gamma_fgd=0.0005,
            lambda_fgd=0.000005)))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
