# FGD: GFL R101-FPN (ms 2x teacher) -> GFL R50-FPN 1x (student) on COCO.
# Official recipe: yzd-v/FGD configs/distillers/fgd/
#   fgd_gfl_r101_distill_gfl_r50_fpn_1x_coco.py  (40.2 -> 43.5 box mAP)
# FGD on all 5 FPN levels, temp 0.5, alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6;
# the student inherits the teacher's neck and head; 1x schedule, SGD lr 0.01, grad clip 35.
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
