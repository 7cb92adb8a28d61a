"""Training, augmentation, ONNX export and fine-tuning of the segmentation model.

The optional ``train`` extra (torch, onnx). torch is imported only by ``model``, ``augment``,
``loop``, ``export`` and ``finetune``; ``config``, ``data``, ``annotations``, ``assess`` and
``toy`` are plain numpy so that ``sarcoscope evaluate`` works without torch.
Entry points: ``sarcoscope train --config FILE`` and ``sarcoscope evaluate`` (cli/train.py).
"""
