"""第 2 章练习：语言模型、分词与词向量（chapters/ch02_concepts.md）。

实现下面每个函数，然后在工作区的上一级目录里评分：

    minillm exercises check DIR

（``minillm exercises check DIR --exercise 2.1`` 只评一道题；卡住时用
``minillm exercises hint 2.1 --workspace DIR`` 看下一条提示。）数组都是 NumPy 数组（实数用
float64）。这里不要调用 minillm：目的是自己写出算法（评分器会与 minillm 的分词器、n-gram 模型和
自动微分 (autograd) 的结果对照）。
"""
import numpy as np


def bpe_merge_step(word_counts):
    """Exercise 2.1: 字节对编码 (byte-pair encoding, BPE) 训练的一步合并。

    word_counts：字典 {词: 次数}，每个词是由符号（字符串）组成的元组，例如
        {("l", "o", "w"): 5, ("l", "o", "w", "e", "r"): 2}。
    找出（按词频加权）出现最多的相邻符号对 (pair)；并列时取 Python 元组顺序中最小的那一对。
    然后在所有词里把这对符号从左到右合并成一个符号；合并后相同的词把次数相加。
    返回 (best_pair, new_word_counts)：new_word_counts 是新字典，不要修改输入。
    参见第 2.1.4 节（分词：BPE）。
    """
    raise NotImplementedError("exercise 2.1: bpe_merge_step")


def bigram_probs(ids, vocab_size, k):
    """Exercise 2.2: 由一条词元流 (token stream) 估计加 k 平滑 (add-k smoothing) 的二元模型 (bigram)。

    ids：形状 (N,) 的整数数组，取值在 [0, vocab_size)；k：平滑常数（浮点数）。
    返回 float64 矩阵 P，形状 (vocab_size, vocab_size)：P[h, w] 是在上文 h 之后出现 w 的
    平滑概率，每一行的和为 1（从未出现过的上文得到均匀分布）。
    参见第 2.1.2 节（统计语言模型：加 k 平滑）。
    """
    raise NotImplementedError("exercise 2.2: bigram_probs")


def masked_perplexity(log_probs, mask):
    """Exercise 2.3: 带填充 (padding) 的一批序列的困惑度 (perplexity)。

    log_probs：float64 (B, T)，每个位置的 log p(x_t | x_<t)（自然对数）；
    mask：bool (B, T)，真实词元处为 True，填充处为 False。填充位置可能是任意值（甚至 -inf 或
    nan），所以要把真实词元挑出来，不要乘以 mask。
    返回一个浮点数：只在真实词元上计算的困惑度。mask 全为 False 时没有词元：抛出 ValueError
    并说明原因。参见第 2.1.1 节（困惑度）。
    """
    raise NotImplementedError("exercise 2.3: masked_perplexity")


def embedding_backward(ids, grad_out, vocab_size):
    """Exercise 2.4: 词嵌入查表 (embedding lookup) 对嵌入矩阵的梯度。

    前向是 out = W[ids]，W 形状 (vocab_size, D)，ids 是任意形状的整数数组，out 形状为
    ids.shape + (D,)；grad_out = dL/dout，形状与 out 相同。
    返回 dW：float64 (vocab_size, D)（没有出现的词为零行）。注意 ids 会重复出现。
    参见第 2.1.5 节（词向量：查表等于 one-hot 行向量乘以 W）。
    """
    raise NotImplementedError("exercise 2.4: embedding_backward")


def wordpiece_tokenize(word, vocab):
    """Exercise 2.5: BERT 的 WordPiece 分词：对一个词做贪心最长匹配 (greedy longest match first)。

    word：一个字符串（一个小写词，没有空格）；vocab：字符串集合；词中间的续接片段带前缀 "##"
    （"playing" -> ["play", "##ing"]）。
    返回片段（字符串）列表；如果某处没有任何片段能匹配，整个词都是未知词：返回 ["[UNK]"]。
    参见第 2.1.4 节（分词：WordPiece）。
    """
    raise NotImplementedError("exercise 2.5: wordpiece_tokenize")
