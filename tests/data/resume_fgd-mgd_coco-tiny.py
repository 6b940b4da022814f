# The tiny FGD config plus MGD, for the exact-resume test: random flips, DefaultSampler with
# AspectRatioBatchSampler (epochs of 40 batches), no validation.
_base_ = ['./fgd_retinanet_tiny_coco-tiny.py']

model = dict(distill_losses=dict(
    mgd=dict(type='MGDLoss', student='neck[0]', teacher='neck[0]', student_channels=32,
             teacher_channels=64, alpha_mgd=2e-5, lambda_mgd=0.65)))
train_cfg = dict(max_iters=8, val_interval=1000)
custom_hooks = [dict(type='DumpLossesHook', digest=True)]
