# EMA self-distillation: ResNet-18 on ImageNet-1k distilled from the exponential moving average of
# its own weights (the "mean teacher" of Tarvainen & Valpola 2017, here with a KD loss); no
# teacher checkpoint. The teacher is mmengine's ExponentialMovingAverage of the student, updated
# once per iteration: avg = (1 - momentum) * avg + momentum * student (momentum 2e-4 = decay
# 0.9998, a time constant of ~5000 iterations, about one epoch at 8 x 32 images).
# An example recipe, not a published one: KD on the logits, T 4, weight 1, next to the CE loss;
# mmpretrain's ResNet-18 schedule (100 epochs, SGD lr 0.1 for 8 x 32, steps at 30/60/90).
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']  # student, data, schedule

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

student = _base_.model
# mmpretrain keeps the normalisation at the config's top level: give it to the student
student.data_preprocessor = _base_.data_preprocessor

model = dict(
    _delete_=True,
    _scope_='mmpretrain',  # its library's registry, also when inherited as mmdistill::
    type='DistillClassifier',
    student=student,
    # the teacher: the student's moving average, in every training checkpoint (resume continues
    # it); BN statistics averaged too (update_buffers)
    teacher=dict(ema=dict(momentum=0.0002, update_buffers=True)),
    distill_losses=dict(
        kd=dict(
            type='KDLoss',
            student='head',  # the logits
            teacher='head',
            temperature=4.0,
            loss_weight=1.0)))
del student
