"""Autograd: Tensor, Function, the backward engine, grad modes, gradcheck."""
from .function import (Function, detect_anomaly, enable_grad, is_anomaly_enabled,
                       is_grad_enabled, no_grad, set_grad_enabled)
from .tensor import (Tensor, arange, empty, eye, full, full_like, ones, ones_like, rand, randint,
                     randn, tensor, zeros, zeros_like)
from . import ops
from .ops import concatenate, stack, split, where
from .gradcheck import GradcheckError, gradcheck

__all__ = ["Function", "Tensor", "tensor", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "detect_anomaly", "is_anomaly_enabled", "gradcheck",
           "GradcheckError", "ops", "concatenate", "stack", "split", "where", "zeros", "ones",
           "full", "empty", "zeros_like", "ones_like", "full_like", "arange", "eye", "rand",
           "randn", "randint"]
