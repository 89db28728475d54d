"""minillm: a from-scratch, educational large-language-model library on NumPy (and CuPy).

    import minillm as mm
    x = mm.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum(); y.backward(); x.grad   # tensor([[2., 4.]])
"""
from . import backend
from .backend import (Device, available_devices, get_default_device, get_default_dtype,
                      manual_seed, set_default_device, set_default_dtype)
from .backend import device
from .backend.kernels import use_reference_kernels
from .autograd import (Function, GradcheckError, Tensor, arange, concatenate, detect_anomaly,
                       enable_grad, eye, full, full_like, gradcheck, is_grad_enabled, no_grad,
                       ones, ones_like, rand, randint, randn, set_grad_enabled, split, stack,
                       tensor, where, zeros, zeros_like, empty)
from .autograd.ops import (abs, clip, exp, log, matmul, maximum, mean, minimum, reshape, sigmoid,
                           sqrt, squeeze, sum, tanh, transpose, unsqueeze, var, swapaxes, relu)

from . import data, datasets, functional, metrics, models, nn, optim, training  # noqa: E402
from . import finetune  # noqa: E402  (built on models and training)
from . import meta  # noqa: E402  (few-shot episodes and meta-learners, built on models)

__version__ = "0.1.0"
