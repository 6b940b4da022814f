# KD (Hinton et al. 2015): ResNet-34 (teacher) -> ResNet-18 (student) on ImageNet-1k.
# Official recipe: megvii-research/mdistiller configs/imagenet/r34_r18/kd.yaml
#   (69.90 -> 70.66 top-1 as reported there; 71.03 in later papers with the same recipe)
# KD on the logits, T 1; CE 0.5, KD 0.5; 100 epochs, SGD lr 0.2 for 512 images
# (= mmpretrain's lr 0.1 for 8 GPUs x 32), steps at 30/60/90, wd 1e-4.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data, schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, top-1 73.62), download into checkpoints/:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth  # noqa: E501
teacher_ckpt = 'checkpoints/resnet34_8xb32_in1k_20210831-f257d4e6.pth'

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor
student.head.loss.loss_weight = 0.5  # CE 0.5

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
            student='head',  # the logits
            teacher='head',
            temperature=1.0,
            loss_weight=0.5)))
del student
