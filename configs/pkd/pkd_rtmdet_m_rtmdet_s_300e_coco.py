# PKD: RTMDet-m (teacher) -> RTMDet-s (student), 300 epochs on COCO.
# Recipe: mmyolo configs/rtmdet/distillation/kd_s_rtmdet_m_neck_300e_coco.py (44.6 -> 45.7 box
# mAP): PKD on the 3 neck outputs, loss weight 1, the student's 128 channels mapped to the
# teacher's 192 by a 1x1 conv (mmyolo: conv + BN connector; PKD's per-channel standardisation
# undoes the BN's affine map), distillation stopped after epoch 280 (mmyolo's StopDistillHook),
# when RTMDet switches to its weak-augmentation pipeline. Schedule, EMA and pipeline switch
# come from mmdet's RTMDet-s base.
_base_ = ['mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py']  # student, data, 300e schedule, hooks

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmdet model zoo, box AP 49.1), download into checkpoints/:
# https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_m_8xb32-300e_coco/rtmdet_m_8xb32-300e_coco_20220719_112220-229f527c.pth  # noqa: E501
teacher_ckpt = 'checkpoints/rtmdet_m_8xb32-300e_coco_20220719_112220-229f527c.pth'

model = dict(
    _delete_=True,
    _scope_='mmdet',  # its library's registry, also when inherited as mmdistill::
    type='DistillDetector',
    student=_base_.model,
    teacher=dict(
        config='mmdet::rtmdet/rtmdet_m_8xb32-300e_coco.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        pkd_neck=dict(
            type='PKDLoss',
            student='neck',
            teacher='neck',
            student_channels=128,
            teacher_channels=192,
            loss_weight=1.0,
            resize_stu=True,
            weight_schedule=dict(stop=280, by_epoch=True))))
