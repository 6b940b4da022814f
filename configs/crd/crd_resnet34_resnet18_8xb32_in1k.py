# CRD, Contrastive Representation Distillation (Tian et al., ICLR 2020): ResNet-34 -> ResNet-18,
# ImageNet-1k. Official recipe: megvii-research/mdistiller configs/imagenet/r34_r18/crd.yaml
#   (69.90 -> 71.17), the CRD settings of HobbitLong/RepDistiller
# Linear embeddings (512 -> 128, L2-normalised) of the pooled penultimate features, memory banks
# of all 1281167 training images (momentum 0.5), 16384 negatives, NCE temperature 0.07;
# CE 1.0, CRD 0.8; 100 epochs, 8 GPUs x 32 = 256 images, SGD lr 0.1, steps 30/60/90, wd 1e-4.
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
        crd=dict(
            type='CRDLoss',
            student='neck',  # GlobalAveragePooling: the pooled (N, 512) features
            teacher='neck',
            student_channels=512,
            teacher_channels=512,
            feat_dim=128,
            nce_k=16384,
            nce_t=0.07,
            nce_m=0.5,
            n_data=1281167,  # ImageNet-1k train images: one memory row per image
            loss_weight=0.8)))
del student
# CRD needs each sample's dataset index: mmpretrain's PackInputs keeps 'sample_idx' by default.
