# SD-KD, Scale Decoupled Distillation (Wei et al., CVPR 2024): ResNet-34 -> ResNet-18, ImageNet-1k.
# Official recipe: shicaiwei123/SDD-CVPR2024 configs/imagenet/r34_r18/sdd_kd.yaml, `--M [1,2,4]`
# The last feature map of each network is pooled to 1x1, 2x2 and 4x4 regions (M = 21) and each
# model's own fc classifies every region; KD per region with consistent/complementary weights.
# The yaml sets no KD section, so mdistiller's defaults apply: T 4, CE 0.1, KD 0.9. Schedule:
# 100 epochs, batch 256 (8 GPUs x 32), SGD lr 0.2, steps at 30/60/90, wd 1e-4.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data, schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, top-1 73.62), download into checkpoints/:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth  # noqa: E501
teacher_ckpt = 'checkpoints/resnet34_8xb32_in1k_20210831-f257d4e6.pth'

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor
student.head.loss.loss_weight = 0.1  # CE 0.1

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    teacher=dict(
        config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        sdd=dict(
            type='SDDLoss',
            student='backbone[-1]',  # the last feature map (N, 512, 7, 7)
            teacher='backbone[-1]',
            classifier='head.fc',  # each model's own classifier, applied to every region
            temperature=4.0,
            scales=(1, 2, 4),
            loss_weight=0.9)))
del student

optim_wrapper = dict(optimizer=dict(lr=0.2))  # the official lr for batch 256
