"""CamVid (SegNet's 11-class version) for mmseg, read from its split lists as shipped."""
from __future__ import annotations

import os.path as osp

from mmengine.fileio import get_local_path
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS


@DATASETS.register_module()
class CamVidDataset(BaseSegDataset):
    """CamVid with 11 classes; label 11 is void (``ignore_index=11``).

    ``ann_file`` is a split list whose lines are ``<image path> <label path>`` relative to
    ``data_root`` (e.g. ``train/0001TP_006690.png trainannot/0001TP_006690.png``).
    """

    METAINFO = dict(
        classes=('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence',
                 'Car', 'Pedestrian', 'Bicyclist'),
        palette=[[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [0, 0, 192],
                 [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                 [0, 128, 192]])

    def __init__(self, ann_file: str, ignore_index: int = 11, reduce_zero_label: bool = False,
                 **kwargs) -> None:
        super().__init__(ann_file=ann_file, ignore_index=ignore_index,
                         reduce_zero_label=reduce_zero_label, **kwargs)

    def load_data_list(self) -> list[dict]:
        data_list = []
        with get_local_path(self.ann_file) as path, open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                img, seg = line.split()
                data_list.append(dict(
                    img_path=osp.join(self.data_root, img),
                    seg_map_path=osp.join(self.data_root, seg),
                    label_map=self.label_map, reduce_zero_label=self.reduce_zero_label,
                    seg_fields=[]))
        return data_list
