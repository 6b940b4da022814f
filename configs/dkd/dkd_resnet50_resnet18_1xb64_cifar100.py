# DKD (Zhao et al., CVPR 2022): ResNet-50 (teacher) -> ResNet-18 (student), CIFAR variants,
# CIFAR-100. Official CIFAR-100 recipe: megvii-research/mdistiller configs/cifar100/dkd/*.yaml
#   (published for ResNet32x4 -> ResNet8x4: 72.50 -> 76.32; mmpretrain has no such models, so
#   this pair has no published number)
# DKD on the logits: alpha 1, beta 8, T 4, warmup 20 epochs; CE 1.0; 240 epochs, one GPU x 64
# images, SGD lr 0.05, steps (x0.1) at 150/180/210, wd 5e-4.
_base_ = ['mmpretrain::resnet/resnet50_8xb16_cifar100.py']  # data (CIFAR-100), runtime

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, ResNet-50 CIFAR-100 top-1 79.90), into checkpoints/:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_b16x8_cifar100_20210528-67b58a1b.pth  # noqa: E501
teacher_ckpt = 'checkpoints/resnet50_b16x8_cifar100_20210528-67b58a1b.pth'

student = _base_.model
student.backbone.depth = 18  # ResNet-18 (CIFAR stem), 512-d features
student.head.in_channels = 512
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor  # CE 1.0 (the base's loss weight)

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    teacher=dict(
        config='mmpretrain::resnet/resnet50_8xb16_cifar100.py',
        checkpoint=teacher_ckpt),
    dry_run_shape=(32, 32),
    distill_losses=dict(
        dkd=dict(
            type='DKDLoss',
            student='head',
            teacher='head',
            alpha=1.0,
            beta=8.0,
            temperature=4.0,
            weight_schedule=dict(warmup=20, by_epoch=True))))  # DKD's warm-up, 20 epochs
del student

# the official CIFAR-100 schedule (mdistiller): 240 epochs, batch 64, lr 0.05
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[150, 180, 210], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=240, val_interval=1)
auto_scale_lr = dict(base_batch_size=64)
