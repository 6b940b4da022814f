# MGD, classification variant (Yang et al., ECCV 2022): ResNet-34 -> ResNet-18 on ImageNet-1k.
# Official recipe: yzd-v/MGD cls/configs/distillers/res34_distill_res18_img.py (69.90 -> 71.69)
# MGD on the last backbone stage (N, 512, 7, 7) with a channel mask (rand(N, C, 1, 1)):
# alpha_mgd 7e-5, lambda_mgd 0.15; CE 1.0; mmcls's ResNet-18 schedule (100 epochs, 8 GPUs x 32,
# SGD lr 0.1, steps at 30/60/90, wd 1e-4).
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data, schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, top-1 73.62; the one the official config loads),
# download into checkpoints/:
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
        mgd=dict(
            type='MGDLoss',
            student='backbone[-1]',  # the last stage, before pooling
            teacher='backbone[-1]',
            student_channels=512,
            teacher_channels=512,
            alpha_mgd=7e-5,
            lambda_mgd=0.15,
            mask_type='channel')))
del student
