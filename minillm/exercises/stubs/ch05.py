"""第 5 章练习：chapters/ch05_practice.md 中的数据管道与解码代码，以及
notebooks/ch05_build_gpt.ipynb 里一件一件搭起来的 GPT（练习 5.6—5.8）。

实现下面每个函数，然后在工作区的上一级目录里评分：

    minillm exercises check DIR

（加 ``--exercise 5.2`` 只评一道题；卡住时用 ``minillm exercises hint 5.2 --workspace DIR``
看下一条提示。）只用 NumPy 和标准库：评分器会与 minillm 自己的代码（Collator、minillm.metrics、
``model.generate`` 的采样器、models.gpt 的 CausalSelfAttention 和 Block、对
F.scaled_dot_product_attention 的自动微分与 mm.gradcheck）以及穷举参考实现对照。
"""
import numpy as np


def next_token_windows(ids, block_size, stride):
    """Exercise 5.1: 把词元流切成因果语言模型预训练 (causal-LM pretraining) 的训练窗口。

    ids：长度 N 的一维整数数组；block_size：窗口长度；stride：相邻窗口起点的间隔。
    窗口从 s = 0, stride, 2 * stride, ... 开始，输入 x 是从 s 开始的 block_size 个词元，
    目标 y 是 x 向后错一位（下一个词）。只保留完整的窗口（y 也要完整），不完整的最后一个丢掉。
    返回 (x, y)，int64，形状 (n_windows, block_size)（没有窗口时为 (0, block_size)）。
    参见第 5.1.1 节（random_windows）。
    """
    raise NotImplementedError("exercise 5.1: next_token_windows")


def pad_batch(sequences, pad_id, max_length=None):
    """Exercise 5.2: 把一批词元 id 列表右侧填充 (right padding) 成矩阵，并截断 (truncation)。

    sequences：B 个整数 id 列表（可能有空列表）；pad_id：填充 id；max_length：None 或截断长度。
    先把每个序列截到前 max_length 个（max_length 不为 None 时），再在右侧用 pad_id 填充到最长
    （截断后）序列的长度 L。
    返回 (ids, attention_mask)，都是 int64 (B, L)：attention_mask 在真实词元处为 1、填充处为 0。
    注意真实词元也可能等于 pad_id（GPT-2 用 eos 做填充）。不要修改输入的列表。
    参见第 5.2.1 节（Collator）。
    """
    raise NotImplementedError("exercise 5.2: pad_batch")


def classification_metrics(y_true, y_pred, num_classes):
    """Exercise 5.3: 准确率 (accuracy)、宏平均 F1 (macro-averaged F1) 与混淆矩阵 (confusion matrix)。

    y_true, y_pred：整数数组 (N,)，类别 id 在 0..num_classes-1。
    返回字典 {"accuracy": float, "macro_f1": float, "confusion": int64 数组 (C, C)}；
    confusion[i, j] 是真实类别 i 被预测为 j 的样本数；macro_f1 是所有 C 个类别的 F1 的平均
    （某类既没有真实样本也没有被预测过时，它的 F1 记为 0）。参见第 5.2.3 节。
    """
    raise NotImplementedError("exercise 5.3: classification_metrics")


def top_k_top_p_filter(logits, top_k, top_p):
    """Exercise 5.4: 采样生成文本时的 top-k 与 top-p（核采样 (nucleus)）过滤。

    logits：浮点数组 (..., V)，沿最后一个轴逐行过滤；top_k：>= 1 的整数或 None；
    top_p：(0, 1] 中的浮点数或 None。返回同形状的新数组：保留的位置保持原 logit，去掉的位置为 -inf。
    先做 top_k：保留 >= 第 k 大 logit 的项（与它相等的也保留）；
    再做 top_p：在剩下的项的 softmax 概率上，保留概率和刚好达到 top_p 的最小集合（最大的那个
    总是保留），与最小保留概率相等的项也保留。
    None（或 top_k >= V、top_p = 1）表示该步不过滤。参见第 5.1.4 节（generate）。
    """
    raise NotImplementedError("exercise 5.4: top_k_top_p_filter")


def greedy_decode(next_logits_fn, prompt_ids, max_new_tokens, eos_id):
    """Exercise 5.5: 贪心解码 (greedy decoding)：反复追加最可能的下一个词。

    next_logits_fn(ids)：输入目前为止的整个序列（整数列表，含提示），返回下一个词的 logits，
    浮点数组 (V,)；prompt_ids：整数列表；max_new_tokens：最多生成的词数；eos_id：结束词 id 或 None。
    追加 eos_id 之后立即停止。每生成一个新词只调用一次 next_logits_fn。
    返回完整序列（提示 + 新词，含 eos），一个新的整数列表。
    参见第 5.1.4 节（generate(do_sample=False)）。
    """
    raise NotImplementedError("exercise 5.5: greedy_decode")


def causal_self_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_head):
    """Exercise 5.6: GPT 的多头因果自注意力 (multi-head causal self-attention) 的前向计算。

    x：(B, T, C) 输入；n_head：头数 (C 能被 n_head 整除，每个头 hd = C // n_head 维)。
    权重与 minillm.models.gpt.CausalSelfAttention 相同（minillm 的 Linear 布局 y = x W + b）：
    w_qkv：(C, 3C)、b_qkv：(3C,) 是融合的 q | k | v 投影 (c_attn)，前 C 列是 q，接着 C 列是 k，
    最后 C 列是 v；每一部分内第 h 个头占第 h 段的 hd 列。w_proj：(C, C)、b_proj：(C,) 是把各头
    拼接回去之后的输出投影 (c_proj)。
    每个头做缩放点积注意力 (scaled dot-product attention，缩放用每个头的维数)，并加因果掩码
    (causal mask)：位置 i 只能看到位置 0..i。不用 dropout。
    返回 y：(B, T, C)。
    参见第 5.1.2 节（模型定义）和 notebooks/ch05_build_gpt.ipynb §2（多头因果自注意力）。
    """
    raise NotImplementedError("exercise 5.6: causal_self_attention")


def gpt_block(x, params, n_head):
    """Exercise 5.7: 一个前置层归一化 (pre-LN) 的 GPT 块 (block) 的前向计算。

    x：(B, T, C)；n_head：头数；params：字典，键与 minillm.models.gpt.Block 的 state_dict 相同：
      "ln_1.weight", "ln_1.bias"：(C,)，注意力之前的 LayerNorm；
      "attn.c_attn.weight" (C, 3C), "attn.c_attn.bias" (3C,), "attn.c_proj.weight" (C, C),
      "attn.c_proj.bias" (C,)：因果自注意力，布局同练习 5.6；
      "ln_2.weight", "ln_2.bias"：(C,)，MLP 之前的 LayerNorm；
      "mlp.c_fc.weight" (C, 4C), "mlp.c_fc.bias" (4C,), "mlp.c_proj.weight" (4C, C),
      "mlp.c_proj.bias" (C,)：两层的 MLP，中间用 GPT-2 的 tanh 近似 GELU。
    块的顺序：注意力子层与 MLP 子层各带一条残差连接 (residual connection)，LayerNorm 放在进入
    子层之前（pre-LN），eps = 1e-5，方差用有偏估计。不用 dropout。
    返回 y：(B, T, C)。
    参见第 5.1.2 节和 notebooks/ch05_build_gpt.ipynb §3（一个 GPT 块）。
    """
    raise NotImplementedError("exercise 5.7: gpt_block")


def attention_backward(q, k, v, grad_out, causal):
    """Exercise 5.8: 缩放点积注意力 (scaled dot-product attention) 的反向传播。

    前向与练习 4.2 相同：q：(..., L, d)，k：(..., S, d)，v：(..., S, dv)，前导批量轴相同；
    分数除以 sqrt(d)；causal 为 True 时 (L == S) 位置 i 只能看到 key 0..i。
    grad_out = dL/d(输出)，形状 (..., L, dv)。
    返回 (dq, dk, dv)，形状分别与 q、k、v 相同。
    评分器会把你的函数装进一个 minillm.autograd.Function 的 backward，用 mm.gradcheck 检查，
    并与 minillm 对 F.scaled_dot_product_attention 的自动微分对照。
    参见第 4.2.1 节（自注意力）、notebooks/ch03_build_autograd.ipynb §3.2（softmax 的反向）和
    notebooks/ch05_build_gpt.ipynb §1（缩放点积注意力）。
    """
    raise NotImplementedError("exercise 5.8: attention_backward")
