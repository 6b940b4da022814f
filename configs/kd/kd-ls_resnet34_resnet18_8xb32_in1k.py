# KD + logit standardization (Sun et al., CVPR 2024): ResNet-34 -> ResNet-18 on ImageNet-1k.
# Official recipe: sunshangquan/logit-standardization-KD configs/imagenet/r34_r18/kd.yaml with
#   `--logit-stand --base-temp 2 --kd-weight 9` (69.90 -> 71.42 top-1)
# Z-score standardized logits on both sides, T 2; CE 1.0, KD 9; 100 epochs, SGD lr 0.2 for 512
# images (= mmpretrain's lr 0.1 for 8 GPUs x 32), steps at 30/60/90, wd 1e-4.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data, schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, top-1 73.62), download into checkpoints/:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth  # noqa: E501
teacher_ckpt = 'checkpoints/resnet34_8xb32_in1k_20210831-f257d4e6.pth'

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor  # CE 1.0 (the base's loss weight)

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    teacher=dict(
        config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        kd=dict(
            type='KDLoss',
            student='head',
            teacher='head',
            temperature=2.0,  # the official `base_temp`
            logit_stand=True,
            loss_weight=9.0)))
del student
