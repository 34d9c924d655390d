"""Keras 3 layers run by atrous's kernels: ``import atrous.keras`` (needs ``atrous[keras]``).

``import atrous`` never imports Keras; this package does. Under Keras's torch backend the
layers call atrous's kernels at inference (Numba on CPU tensors, Triton on CUDA tensors,
with this machine's tuned configs) and fall back to keras.ops in training, when gradients
are needed, and on the JAX and TensorFlow backends (with a warning, once); see
``atrous.keras.runtime`` and docs/keras.md.

| name | what |
|---|---|
| :class:`GlobalAveragePooling2D` | drop-in for ``keras.layers.GlobalAveragePooling2D`` |
| :class:`AtrousConv2D` | drop-in for ``keras.layers.Conv2D`` (HWIO kernel, bias) |
| :class:`BilinearResize` | UpSampling2D(bilinear), tf.image.resize, TF1 resize_bilinear |
| :class:`ASPP` | both ASPP structures (Keras tutorial, torchvision), BN folded |
| :func:`convert_aspp`, :func:`convert` | a stock-layer ASPP block (or a model) to atrous |
| :func:`keras_tutorial_block`, :func:`torchvision_block` | the stock-layer blocks |
| :func:`fallback` | a block in which every layer runs its keras.ops form |
"""

from atrous.keras.aspp import ASPP
from atrous.keras.blocks import keras_tutorial_block, torchvision_block
from atrous.keras.conv import AtrousConv2D
from atrous.keras.convert import convert, convert_aspp
from atrous.keras.pooling import GlobalAveragePooling2D
from atrous.keras.resize import BilinearResize
from atrous.keras.runtime import fallback

__all__ = ["ASPP", "AtrousConv2D", "BilinearResize", "GlobalAveragePooling2D", "convert",
           "convert_aspp", "fallback", "keras_tutorial_block", "torchvision_block"]
