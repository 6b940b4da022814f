# PKD: FCOS X101-64x4d-FPN (teacher) -> FCOS R50-caffe-FPN GN-head 1x (student) on COCO.
# Settings of mmrazor's PKD FPN recipes (PKD on all 5 FPN levels, loss weight 6); the student
# inherits the teacher's neck and head (the same FCOS head above the backbone). The teacher was
# trained with pytorch-style normalisation, the student with caffe-style: each model sees its own
# (the wrapper renormalises the teacher's input). No published number for this pair.
_base_ = ['mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py']  # student, data, 1x schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmdet model zoo, box AP 42.6), download into checkpoints/:
# https://download.openmmlab.com/mmdetection/v2.0/fcos/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco_20200229-11f8c079.pth  # noqa: E501
teacher_ckpt = 'checkpoints/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco_20200229-11f8c079.pth'  # noqa: E501

model = dict(
    _delete_=True,
    _scope_='mmdet',  # its library's registry, also when inherited as mmdistill::
    type='DistillDetector',
    student=_base_.model,
    teacher=dict(
        config='mmdet::fcos/fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco.py',
        checkpoint=teacher_ckpt),
    init_student=True,
    distill_losses=dict(
        pkd_fpn=dict(
            type='PKDLoss',
            student='neck',
            teacher='neck',
            loss_weight=6.0,
            resize_stu=True)))
