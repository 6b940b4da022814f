# CrossKD: GFL R101-FPN (ms 2x teacher) -> GFL R50-FPN 1x (student) on COCO.
# Official recipe: jbwang1997/CrossKD configs/crosskd/crosskd_r50_gflv1_r101-2x-ms_fpn_1x_coco.py
#   (40.2 -> 43.7 box mAP): reused_teacher_head_idx 3, i.e. the student's head features after
#   the third conv of each tower (before its ReLU) go through the teacher's 4th conv and
#   predictors; KDQualityFocalLoss (beta 1, weight 1) on the scores, KL summed over the bins
#   (T 1, weight 3) and GIoU (weight 2) on the boxes; no inheriting, no grad clip; 1x schedule,
#   SGD lr 0.01 for 8 GPUs x 2 images.
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']  # student, data, 1x schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmdet model zoo, box AP 44.7), download into checkpoints/:
# https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth  # noqa: E501
teacher_ckpt = 'checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'

# head layer 3: the output of conv 2's GroupNorm in each tower (recorded before the ReLU that
# overwrites it in place); each runs once per FPN level, so a tap gives the 5 levels
head_taps = ['bbox_head.cls_convs.2.gn', 'bbox_head.reg_convs.2.gn']
model = dict(
    _delete_=True,
    _scope_='mmdet',  # its library's registry, also when inherited as mmdistill::
    type='DistillDetector',
    student=_base_.model,
    teacher=dict(
        config='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        crosskd=dict(
            type='CrossKDLoss',
            student=head_taps,
            # the same features of the teacher, then its predictions: class logits and the box
            # logits of each level (after its Scale)
            teacher=head_taps + ['bbox_head.gfl_cls'] + [f'bbox_head.scales.{i}' for i in range(5)],
            # the teacher's remaining layers, resolved in the teacher (not trained, not saved)
            cls_branch=['bbox_head.cls_convs.2.activate', 'bbox_head.cls_convs.3',
                        'bbox_head.gfl_cls'],
            reg_branch=['bbox_head.reg_convs.2.activate', 'bbox_head.reg_convs.3',
                        'bbox_head.gfl_reg', 'bbox_head.scales'],
            cls_weight=1.0,
            reg_weight=3.0,
            bbox_weight=2.0,
            beta=1.0,
            T=1.0,
            reg_max=16)))
