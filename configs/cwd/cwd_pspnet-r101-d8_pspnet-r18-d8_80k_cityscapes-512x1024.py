# CWD: PSPNet R101-d8 (teacher) -> PSPNet R18-d8 (student) on Cityscapes, 512x1024 crops, 80k.
# Recipe: mmrazor configs/distill/mmseg/cwd/
#   cwd_logits_pspnet_r101_d8_pspnet_r18_d8_512x1024_cityscapes_80k.py (74.87 -> 75.54 mIoU;
#   teacher 79.76). Channel-wise divergence on the segmentation logits decode_head.conv_seg
#   (N, 19, H/8, W/8) of both models, tau 1, loss weight 5; the student keeps its own
#   cross-entropy losses (decode + auxiliary head); no inheriting; mmseg's 80k schedule
#   (SGD lr 0.01, poly), 4 GPUs x 2 images, SyncBN.
# The paper's recipe (Shu et al., ICCV 2021, 69.10 -> 74.87 on its own 40k baseline) uses
#   tau 4, loss weight 3: set tau=4.0, loss_weight=3.0 below to try it.
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py']  # student, data, 80k

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

# Teacher weights (mmseg model zoo, mIoU 79.76), download into checkpoints/:
# https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth  # noqa: E501
teacher_ckpt = 'checkpoints/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'  # noqa: E501

model = dict(
    _delete_=True,
    _scope_='mmseg',  # its library's registry, also when inherited as mmdistill::
    type='DistillSegmentor',
    student=_base_.model,
    teacher=dict(
        config='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        # both models are d8 (output stride 8): the logit maps have the same size.
        cwd_logits=dict(
            type='CWDLoss',
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            tau=1.0,
            loss_weight=5.0)))
