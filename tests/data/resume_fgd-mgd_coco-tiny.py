# The tiny FGD config plus MGD, with a deterministic pipeline, for the exact-resume test.
_base_ = ['./fgd_retinanet_tiny_coco-tiny.py']

model = dict(distill_losses=dict(
    mgd=dict(type='MGDLoss', student='neck[0]', teacher='neck[0]', student_channels=32,
             teacher_channels=64, alpha_mgd=2e-5, lambda_mgd=0.65)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(256, 192), keep_ratio=True),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_iters=8, val_interval=1000)
custom_hooks = [dict(type='DumpLossesHook', digest=True)]
