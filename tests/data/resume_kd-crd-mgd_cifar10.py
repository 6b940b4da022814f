# The tiny CIFAR-10 KD/DKD/CTKD config plus CRD (memory banks) and MGD (channel masks), for the
# exact-resume test: random crops and flips, InfiniteSampler, validation at the checkpoint.
_base_ = ['./kd_resnet-gn_tiny_cifar10.py']

model = dict(distill_losses=dict(
    crd=dict(type='CRDLoss', student='neck', teacher='neck', student_channels=64,
             teacher_channels=128, feat_dim=16, nce_k=64),
    mgd=dict(type='MGDLoss', student='backbone[-1]', teacher='backbone[-1]',
             student_channels=64, teacher_channels=128, alpha_mgd=7e-5, lambda_mgd=0.15,
             mask_type='channel')))
train_pipeline = [dict(type='LoadImageFromFile'),
                  dict(type='RandomCrop', crop_size=32, padding=4),
                  dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                  dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_iters=8, val_interval=3)
