# PKD: FCOS X101-64x4d-FPN (teacher) -> RetinaNet R50-FPN 1x (student) on COCO: a heterogeneous
# pair (anchor-free teacher, anchor-based student), the paper's headline setting.
# Recipe: mmrazor configs/distill/mmdet/pkd/pkd_fpn_fcos_x101_retina_r50_1x_coco.py
#   (36.5 -> 40.3 box mAP; teacher 42.6).
# PKD on all 5 FPN levels, loss weight 6, the student resized to the teacher when sizes differ;
# no inheriting (the heads differ); 1x schedule, SGD lr 0.01 (mmdet's RetinaNet base).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']  # student, data, 1x schedule

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
    distill_losses=dict(
        # 'neck' yields the 5 FPN levels P3-P7 on both sides: one PKDLoss per level, summed.
        pkd_fpn=dict(
            type='PKDLoss',
            student='neck',
            teacher='neck',
            loss_weight=6.0,
            resize_stu=True)))
