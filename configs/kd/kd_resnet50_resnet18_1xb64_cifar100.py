# KD (Hinton et al. 2015): ResNet-50 (teacher) -> ResNet-18 (student), CIFAR variants, CIFAR-100.
# Official CIFAR-100 recipe: megvii-research/mdistiller configs/cifar100/kd.yaml
#   (published for ResNet32x4 -> ResNet8x4: 72.50 -> 73.33; mmpretrain has no such models, so
#   this pair has no published number)
# KD on the logits, T 4; CE 0.1, KD 0.9; 240 epochs, one GPU x 64 images, SGD lr 0.05,
# steps (x0.1) at 150/180/210, wd 5e-4.
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
student.data_preprocessor = _base_.data_preprocessor
student.head.loss.loss_weight = 0.1  # CE 0.1

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
        kd=dict(
            type='KDLoss',
            student='head',
            teacher='head',
            temperature=4.0,
            loss_weight=0.9)))
del student

# the official CIFAR-100 schedule (mdistiller): 240 epochs, batch 64, lr 0.05
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[150, 180, 210], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=240, val_interval=1)
auto_scale_lr = dict(base_batch_size=64)
