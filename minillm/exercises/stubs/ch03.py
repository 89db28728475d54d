"""第 3 章练习：一个训练步的各个部件（chapters/ch03_algorithms.md）。

实现下面每个函数，然后在工作区的上一级目录里评分：

    minillm exercises check DIR

（``minillm exercises check DIR --exercise 3.1`` 只评一道题；卡住时用
``minillm exercises hint 3.1 --workspace DIR`` 看下一条提示。）数组都是 NumPy float64 数组。
每个函数都是纯函数 (pure function)：返回新值，不修改参数（优化器的状态作为参数传入、作为结果
返回）。这里不要调用 minillm：评分器会与 minillm.optim、nn.LSTM、nn.Linear 和 F.cross_entropy
（配合自动微分）的结果对照，并把练习 3.6 的反向装进 minillm.autograd.Function 用 mm.gradcheck 检查。
"""
import numpy as np


def adam_step(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """Exercise 3.1: AdamW 的一步更新（解耦权重衰减 (decoupled weight decay)，带偏差修正 (bias correction)）。

    param, grad, m, v：同形状的数组（m, v 是第 t - 1 步之后的一阶、二阶矩，第一步之前为零）；
    t：本步的序号 1, 2, 3, ...；lr, beta1, beta2, eps, weight_decay：浮点超参数。
    返回新的数组 (param, m, v)：本步更新之后的参数和两个矩。
    参见第 3.1.4 节（Adam、AdamW）。
    """
    raise NotImplementedError("exercise 3.1: adam_step")


def clip_grad_norm(grads, max_norm):
    """Exercise 3.2: 按全体梯度的联合 L2 范数 (joint L2 norm) 裁剪梯度 (gradient clipping)。

    grads：数组列表（形状任意），把它们拼成一个长向量来看它的范数；max_norm：浮点数。
    范数超过 max_norm 时把每个数组按同一比例缩小（分母加 1e-6 防止除零，PyTorch 和 minillm
    都这样做），否则保持不变。
    返回 (clipped, total)：新的数组列表，以及裁剪之前的总范数（浮点数）。
    参见第 3.1.4 节第 2 条（梯度裁剪）。
    """
    raise NotImplementedError("exercise 3.2: clip_grad_norm")


def lr_at(step, max_lr, warmup_steps, total_steps, min_lr_rate):
    """Exercise 3.3: 线性预热 (linear warmup) + 余弦衰减到下限 (cosine decay to a floor) 的学习率。

    step：整数，0 <= step <= total_steps；max_lr：峰值学习率；warmup_steps：预热步数；
    min_lr_rate：下限占 max_lr 的比例。学习率从 0 线性升到 max_lr（第 warmup_steps 步），
    然后沿余弦曲线降到第 total_steps 步的 max_lr * min_lr_rate。
    返回第 step 步的学习率（浮点数）。参见第 3.1.4 节第 1 条（学习率调度）。
    """
    raise NotImplementedError("exercise 3.3: lr_at")


def lstm_cell(x, h, c, W, U, b):
    """Exercise 3.4: 对一批输入执行一步 LSTM 单元 (LSTM cell)。

    x：(B, I) 输入；h, c：(B, H) 上一步的隐状态和细胞状态；
    W：(I, 4H)，U：(H, 4H)，b：(4H,)。W、U、b 的列按 PyTorch 的门顺序 i, f, g, o 排列：
    [0:H] 输入门、[H:2H] 遗忘门、[2H:3H] 候选值 g、[3H:4H] 输出门。
    返回 (h_new, c_new)，形状都是 (B, H)。sigmoid 要写成大 |z| 时不溢出的形式。
    参见第 1.1.2 节（LSTM 的公式）。
    """
    raise NotImplementedError("exercise 3.4: lstm_cell")


def cross_entropy_with_grad(logits, targets, ignore_index=-100):
    """Exercise 3.5: 一批样本的平均交叉熵 (cross-entropy) 及其对 logits 的梯度。

    logits：(N, C) 浮点数；targets：(N,) 整数，取值在 [0, C) 或等于 ignore_index（该行不计入
    损失，梯度为零）。损失是对未被忽略的 M 行取平均。
    返回 (loss, dlogits)：loss 是浮点数，dlogits 形状 (N, C)。logsumexp 要数值稳定。
    参见第 3.1.3 节（损失函数：ignore_index，softmax - onehot 的梯度）。
    """
    raise NotImplementedError("exercise 3.5: cross_entropy_with_grad")


def matmul_backward(a, b, grad_out):
    """Exercise 3.6: 矩阵乘法 c = a @ b 的反向传播 (backward)，支持批量轴的广播 (broadcasting)。

    a：(..., n, k)，b：(..., k, m)，两者的前导批量轴 (batch axes) 按 NumPy 规则广播，例如
    a (2, 1, 3, 4) 与 b (5, 4, 6) 得到 c (2, 5, 3, 6)；grad_out = dL/dc，形状与 c 相同。
    返回 (da, db)：dL/da 与 dL/db，形状必须分别与 a、b 完全相同。
    评分器会把你的函数装进一个 minillm.autograd.Function 的 backward，用 mm.gradcheck 做中心差分
    检查，并与 minillm 对 @ 的自动微分对照。
    参见第 3.1.3 节（反向传播）和 notebooks/ch03_build_autograd.ipynb §3.1（矩阵乘法的反向）。
    """
    raise NotImplementedError("exercise 3.6: matmul_backward")


def train_step(W, b, x, y, m, v, t, lr, weight_decay, max_norm):
    """Exercise 3.7: softmax 回归分类器 (softmax regression) 的一个完整训练步 (training step)。

    模型：logits = x @ W + b；x：(N, D) 输入，y：(N,) 整数标签 (取值 0..C-1)，W：(D, C)，b：(C,)。
    损失 (loss)：N 个样本的平均交叉熵 (mean cross-entropy)。一步依次做：前向求损失 → 求 W、b
    的梯度 → 把 (dW, db) 当作一个整体按联合 L2 范数 (joint L2 norm) 裁剪到 max_norm（与练习 3.2
    相同，分母加 1e-6）→ AdamW 更新 (betas 0.9 / 0.999，eps 1e-8，带偏差修正)。权重衰减
    (weight_decay) 与 minillm 的 Trainer 一致：只作用于矩阵 W，不作用于偏置 b。
    m = (m_W, m_b)、v = (v_W, v_b)：第 t - 1 步之后的一阶、二阶矩（第一步之前为零）；
    t：本步的序号 1, 2, 3, ...。不要修改传入的数组。
    返回 (loss, W_new, b_new, m_new, v_new)：loss 是更新之前的损失（浮点数），m_new、v_new 是
    同样结构的元组。
    参见第 3.1.3—3.1.4 节和 notebooks/ch05_build_gpt.ipynb §4（手写 AdamW 的训练循环）。
    """
    raise NotImplementedError("exercise 3.7: train_step")
