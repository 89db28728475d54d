"""第 4 章练习：用 NumPy 亲手实现第 4 章的公式（chapters/ch04_math.md）。

实现下面每个函数，然后在工作区的上一级目录里评分：

    minillm exercises check DIR

（卡住时用 ``minillm exercises hint 4.1 --workspace DIR`` 看下一条提示。）每个函数的输入和
输出都是 NumPy float64 数组。这里不要调用 minillm：目的是自己写出公式（评分器会与 minillm 的
实现对照）。
"""
import numpy as np  # noqa: F401 - you will need it


def softmax_backward(p, grad_out):
    """Exercise 4.1: softmax 对其输入 logits 的梯度（反向传播 (backward)）。

    p：softmax 的输出，形状 (..., C)，softmax 沿最后一个轴计算；
    grad_out：dL/dp，形状相同。
    返回 dL/dz，形状相同。不需要循环。
    参见第 4.2.1 节（雅可比矩阵 (Jacobian) 出现的地方）与第 3.1.3 节。
    """
    raise NotImplementedError("exercise 4.1: softmax_backward")


def scaled_dot_product_attention(q, k, v, causal=False):
    """Exercise 4.2: 缩放点积注意力 (scaled dot-product attention)，作用在最后两个轴上。

    q：(..., L, d_k)；k：(..., S, d_k)；v：(..., S, d_v)；前面的轴是批次/注意力头轴。
    causal=True 时为因果掩码 (causal mask)：查询 i 只能关注键 j <= i。
    返回 (..., L, d_v)。softmax 要数值稳定。参见第 4.2.2 节（注意力机制）。
    """
    raise NotImplementedError("exercise 4.2: scaled_dot_product_attention")


def layer_norm_forward_backward(x, gamma, beta, grad_out, eps=1e-5):
    """Exercise 4.3: 沿最后一个轴的层归一化 (layer normalization)，前向与反向。

    x：(..., d)；gamma, beta：(d,)；grad_out：dL/dy，形状同 x；eps：加在方差上的小常数
    （方差用有偏方差 (biased variance)）。
    返回元组 (y, dx, dgamma, dbeta)：y、dx 形状同 x；dgamma、dbeta 形状 (d,)，对所有前导
    （批次）轴求和。参见第 4.1.3 节。
    """
    raise NotImplementedError("exercise 4.3: layer_norm_forward_backward")


def sinusoidal_positions(n_positions, d_model):
    """Exercise 4.4: 原始 Transformer 的正弦位置编码表 (sinusoidal positional encoding)。

    n_positions：位置个数（pos = 0..n_positions-1）；d_model：编码维度（可以是奇数）。
    返回 PE，float64，形状 (n_positions, d_model)：偶数列是 sin，奇数列是 cos，频率随列号
    增大而降低；d_model 为奇数时 sin 列比 cos 列多一列（最后一列是 sin）。
    参见第 4.2.3 节（位置编码）。
    """
    raise NotImplementedError("exercise 4.4: sinusoidal_positions")


def mlm_mask(ids, special_mask, vocab_size, mask_id, rng):
    """Exercise 4.5: BERT 掩码语言模型 (masked language model, MLM) 对一批词元的破坏。

    ids：整数数组 (B, T)；special_mask：bool (B, T)，特殊词元（[CLS]、[SEP]、填充）处为 True，
    这些位置永远不能被选中；rng：np.random.Generator，唯一的随机来源。
    每个非特殊位置以 15% 的概率被选中；被选中的位置 80% 换成 mask_id，10% 换成从
    0..vocab_size-1 均匀抽取的随机词（可能等于原词），10% 保持不变；未选中的位置不变。
    返回新的数组 (inputs, labels)，都是 int64 (B, T)：labels 在被选中位置是原词 id，其余为 -100。
    不要原地修改 ids。参见第 4.3.1 节（BERT 的预训练）。
    """
    raise NotImplementedError("exercise 4.5: mlm_mask")
