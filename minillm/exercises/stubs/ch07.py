"""第 7 章练习：在 PyTorch / Hugging Face Transformers 与 minillm 之间搬运权重
（chapters/ch07_tools.md，7.1.1 Hugging Face Transformers 与 7.1.3 OpenAI GPT；注意力头的
排布在 chapters/ch04_math.md 的 4.2.2 多头注意力中推导）。

实现下面每个函数，然后在工作区的上一级目录里评分：

    minillm exercises check DIR

（或只评一道题：`minillm exercises check DIR --exercise 7.2`；卡住时用
`minillm exercises hint 7.2 --workspace DIR` 看下一条提示。）每个函数的输入输出都是 NumPy
数组（float64）或由它们组成的字典。这里不要调用 minillm 或 torch：评分器会把你的数组装进
minillm 的 Linear 层和 GPT 注意力，比较它们的输出。
"""
import numpy as np


def torch_to_minillm_linear(state):
    """Exercise 7.1: 把 PyTorch nn.Linear 层的 state dict 转换成 minillm 的布局。

    state：字典 名字 -> NumPy 数组，例如 {"fc1.weight": (out, in), "fc1.bias": (out,),
    "fc2.weight": ...}。PyTorch 的 Linear 权重形状是 (out_features, in_features)，minillm 的
    Linear 计算 y = x @ W + b，W 形状 (in_features, out_features)。
    返回一个新字典，键不变，值为 minillm 布局的数组（偏置复制一份）；不要修改 state。
    参见第 7.1.1 节。
    """
    raise NotImplementedError("exercise 7.1: torch_to_minillm_linear")


def split_heads(x, n_heads):
    """Exercise 7.2: 把特征轴拆成多个注意力头 (attention heads)。

    x：(B, T, C)，C 能被 n_heads 整除。头 h 拥有第 h 段连续的 D = C // n_heads 个特征
    （与 GPT-2、BERT 相同）。
    返回 (B, H, T, D)。不需要循环。参见第 4.2.2 节（多头注意力）。
    """
    raise NotImplementedError("exercise 7.2: split_heads")


def merge_heads(x):
    """Exercise 7.3: 把各个注意力头拼回特征轴（split_heads 的逆运算）。

    x：(B, H, T, D)，每个头的注意力输出。
    返回 (B, T, H * D)，使得 merge_heads(split_heads(x, H)) == x。参见第 4.2.2 节。
    """
    raise NotImplementedError("exercise 7.3: merge_heads")


def split_packed_qkv(c_attn_weight, c_attn_bias, n_heads):
    """Exercise 7.4: 把 GPT-2 融合的注意力投影 (fused c_attn) 拆成每个头的 q、k、v。

    c_attn_weight：(d, 3d)，c_attn_bias：(3d,)：GPT-2 的 `h.{i}.attn.c_attn`（Conv1D，即
    y = x @ W + b，无需转置），3d 个输出依次是 [q | k | v]，每部分宽 d，再按练习 7.2 的方式
    分成 n_heads 个头，每头 D = d // n_heads 个连续特征。
    返回含六个数组的字典："q_weight"、"k_weight"、"v_weight" 形状 (n_heads, d, D)，
    "q_bias"、"k_bias"、"v_bias" 形状 (n_heads, D)，使 x @ q_weight[h] + q_bias[h] 是头 h 的
    查询（k、v 同理）。参见第 4.2.2 节（多头注意力与 GPT-2 的 d x 3d c_attn）。
    """
    raise NotImplementedError("exercise 7.4: split_packed_qkv")
