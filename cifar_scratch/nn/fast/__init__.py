"""The fast kernels: every kernel of :mod:`cifar_scratch.nn.reference`, with the same signature and the
same results (tests/nn/test_kernels.py), faster where measurement said it was worth it:

- :mod:`.elementwise`: ReLU and GELU, block by block in the thread pool;
- :mod:`.conv`: convolution by blocked im2col and GEMM, max pooling that keeps only the winners;
- :mod:`.winograd`: stride-1 3x3 convolutions by Winograd F(4x4, 3x3) or F(5x5, 3x3), where ``training.conv_algorithm``
  asks for it (:func:`.conv.use_algorithm`);
- :mod:`.norm`: batch normalisation with BLAS sums and pooled passes.

The other kernels are the reference ones: a faster version would not be faster.
"""

from cifar_scratch.nn.fast.conv import conv2d_backward, conv2d_forward, maxpool_backward, maxpool_forward
from cifar_scratch.nn.fast.elementwise import gelu_backward, gelu_erf_forward, gelu_forward, relu_backward, relu_forward
from cifar_scratch.nn.fast.norm import batchnorm_backward, batchnorm_forward
from cifar_scratch.nn.reference import (
    avgpool_backward,
    avgpool_forward,
    cross_entropy,
    dense_backward,
    dense_forward,
    dropout_backward,
    dropout_forward,
    global_avgpool_backward,
    global_avgpool_forward,
    global_maxpool_backward,
    global_maxpool_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax,
    softmax_cross_entropy,
    tanh_backward,
    tanh_forward,
)

#: The kernels this engine replaces with faster ones (the rest are the reference's own).
FAST = (
    "relu_forward",
    "relu_backward",
    "gelu_forward",
    "gelu_erf_forward",
    "gelu_backward",
    "conv2d_forward",
    "conv2d_backward",
    "maxpool_forward",
    "maxpool_backward",
    "batchnorm_forward",
    "batchnorm_backward",
)

__all__ = [
    "avgpool_backward",
    "avgpool_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "conv2d_backward",
    "conv2d_forward",
    "cross_entropy",
    "dense_backward",
    "dense_forward",
    "dropout_backward",
    "dropout_forward",
    "gelu_backward",
    "gelu_erf_forward",
    "gelu_forward",
    "global_avgpool_backward",
    "global_avgpool_forward",
    "global_maxpool_backward",
    "global_maxpool_forward",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "maxpool_backward",
    "maxpool_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax",
    "softmax_cross_entropy",
    "tanh_backward",
    "tanh_forward",
]
