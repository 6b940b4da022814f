# MGD: PSPNet R101-d8 (teacher) -> DeepLabV3 R18-d8 (student) on Cityscapes, 512x512 crops, 40k.
# Official recipe: yzd-v/MGD seg/configs/distillers/mgd/
#   psp_r101_distill_deepv3_r18_40k_512x512_city.py (73.20 -> 76.31 mIoU). The teacher is the
#   PSPNet R101-d8 512x1024 40k model (mIoU 78.34) for both students. Two distillation terms,
#   as the official SegmentationDistiller computes them (use_logit=True):
#   - MGD on the last backbone stage backbone[3] (student 512 -> teacher 2048 channels through
#     a 1x1 align conv), alpha_mgd 2e-5, lambda_mgd 0.75;
#   - channel-wise divergence on the logits decode_head.conv_seg, tau 4, weight 3 (CWD's
#     paper recipe, hard-coded in the official distiller as 'loss_logit').
#   The student keeps its cross-entropy losses (decode + auxiliary head); no inheriting, no
#   grad clip. Data and schedule as the official student config
#   deeplabv3_r18-d8_512x512_40k_cityscapes.py (mmseg 0.x cityscapes_512x512 + schedule_40k):
#   512x512 crops, 40k iterations, SGD lr 0.01 poly, 2 images per GPU, SyncBN.
_base_ = ['mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py']  # student, data

custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

crop_size = (512, 512)

# Teacher weights (mmseg model zoo, mIoU 78.34), download into checkpoints/:
# https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x1024_40k_cityscapes/pspnet_r101-d8_512x1024_40k_cityscapes_20200604_232751-467e7cf4.pth  # noqa: E501
teacher_ckpt = 'checkpoints/pspnet_r101-d8_512x1024_40k_cityscapes_20200604_232751-467e7cf4.pth'  # noqa: E501

model = dict(
    _delete_=True,
    _scope_='mmseg',  # its library's registry, also when inherited as mmdistill::
    type='DistillSegmentor',
    student=dict(_base_.model,
                 data_preprocessor=dict(_base_.model.data_preprocessor, size=crop_size)),
    teacher=dict(
        config='mmseg::pspnet/pspnet_r101-d8_4xb2-40k_cityscapes-512x1024.py',
        checkpoint=teacher_ckpt),
    distill_losses=dict(
        # ResNet-18 stage 4 (512 channels) vs ResNet-101 stage 4 (2048), both at 1/8 scale
        mgd_fea=dict(
            type='MGDLoss',
            student='backbone[3]',
            teacher='backbone[3]',
            student_channels=512,
            teacher_channels=2048,
            alpha_mgd=0.00002,
            lambda_mgd=0.75),
        cwd_logits=dict(
            type='CWDLoss',
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            tau=4.0,
            loss_weight=3.0)))

# 512x512 crops (mmseg 0.x cityscapes_512x512.py)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# 40k schedule (mmseg's schedule_40k.py)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))
