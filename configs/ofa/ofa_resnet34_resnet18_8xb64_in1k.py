# OFA-KD, One-for-All KD (Hao et al., NeurIPS 2023): ResNet-34 -> ResNet-18 on ImageNet-1k.
# Official recipe: Hao840/OFAKD train.py defaults + configs/imagenet/cnn.yaml (CNN students)
# Exit branches on all four student stages (SepConv stacks -> GAP -> Linear), each trained with
# the OFA loss against the teacher's logits, plus the OFA loss on the student's own logits:
# eps 1 (the 1.5 of the README is for the DeiT-T teacher), T 1, kd/ofa weights 1, CE 1 with
# label smoothing 0.1; 100 epochs, 8 GPUs x 64 images, SGD lr 0.1, 3 warmup epochs, steps
# (x0.1) every 30 epochs, wd 1e-4, no colour jitter.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmpretrain model zoo, top-1 73.62), download into checkpoints/:
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth  # noqa: E501
teacher_ckpt = 'checkpoints/resnet34_8xb32_in1k_20210831-f257d4e6.pth'

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor
student.head.loss = dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original',
                         loss_weight=1.0)  # timm's --smoothing 0.1

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    teacher=dict(
        config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        ofa=dict(
            type='OFALoss',
            # the four stage outputs go to one OFALoss (its exit branches); the student's
            # logits come from DistillClassifier (`logits_S`)
            student=['backbone.layer1', 'backbone.layer2', 'backbone.layer3',
                     'backbone.layer4'],
            teacher='head',  # the teacher's logits
            student_channels=[64, 128, 256, 512],
            teacher_channels=512,  # the teacher's pre-logits dimension (projectors end in 512)
            num_classes=1000,
            ofa_stage=(1, 2, 3, 4),
            ofa_eps=1.0,
            ofa_temperature=1.0,
            ofa_loss_weight=1.0,
            kd_loss_weight=1.0)))
del student

train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=3,
         convert_to_iter_based=True),
    # timm's step schedule decays at absolute epochs 30/60/90 (warmup included)
    dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=512)
