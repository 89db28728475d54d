"""第 6 章练习：第 6 章各种应用背后的小算法（chapters/ch06_applications.md）：文本分类、
命名实体识别、问答。

实现下面每个函数，然后在工作区的上一级目录里评分：

    minillm exercises check DIR

（或只评一道题：`minillm exercises check DIR --exercise 6.3`；卡住时用
`minillm exercises hint 6.3 --workspace DIR` 看下一条提示。）数组是 NumPy 数组（实数用
float64）；标签和词项是 Python 字符串。这里不要调用 minillm：评分器会与 minillm 的评测指标、
问答后处理、BM25 检索器和池化对照。
"""
import numpy as np


def bio_to_spans(tags):
    """Exercise 6.1: 把一个 BIO 标签序列转换成实体片段 (type, start, end)。

    tags：字符串列表，每个是 "O"、"B-<TYPE>" 或 "I-<TYPE>"（例如 ["B-PER", "I-PER", "O"]）。
    返回元组列表 (type, start, end)，按 start 排序，end 不包含在内 (exclusive)：上例为
    [("PER", 0, 2)]。规则同 conlleval / seqeval 的默认模式：不跟在同类型实体后面的 "I-X"
    也会开始一个新实体（例如 ["O", "I-PER"] 含 ("PER", 1, 2)）。
    参见第 6.2.2 节（标注体系 (tagging scheme)）。
    """
    raise NotImplementedError("exercise 6.1: bio_to_spans")


def entity_f1(true_tag_seqs, pred_tag_seqs):
    """Exercise 6.2: 命名实体识别 (NER) 的实体级微平均 (micro) 精确率、召回率与 F1。

    true_tag_seqs, pred_tag_seqs：句子列表，每句是一个 BIO 标签列表；第 k 句在两边长度相同。
    预测的实体（句子 k、类型、start、end）只有与标准答案中的实体完全相同时才算正确
    （用 bio_to_spans）。0/0 记为 0.0。
    返回 Python 浮点数元组 (precision, recall, f1)。参见第 6.2.3 节。
    """
    raise NotImplementedError("exercise 6.2: entity_f1")


def best_span(start_logits, end_logits, max_answer_len):
    """Exercise 6.3: 抽取式问答 (extractive QA) 的最佳答案片段。

    start_logits, end_logits：(T,) 浮点数组，每个词元“答案从这里开始”/“到这里结束”的分数；
    max_answer_len：答案最多包含的词元数。在 start <= end < start + max_answer_len
    （end 包含在内 (inclusive)）的约束下，使两个分数之和最大。
    并列时取最小的 start，再取最小的 end。返回两个 Python 整数 (start, end)。
    参见第 6.3.1 节（阅读理解）。
    """
    raise NotImplementedError("exercise 6.3: best_span")


def bm25_scores(query_terms, docs_terms, k1, b):
    """Exercise 6.4: 每篇文档对一个查询的 Okapi BM25 分数（第 6.3.2 节，开放域问答：先检索再阅读）。

    query_terms：字符串列表（查询中重复的词每次都算）；docs_terms：N 篇文档，每篇是字符串
    列表（至少一篇非空）；k1, b：BM25 的两个参数。idf 用 Lucene 的版本（永不为负）；
    没有出现在任何文档中的词贡献 0。
    返回 float64 数组 (N,)：每篇文档的分数。
    """
    raise NotImplementedError("exercise 6.4: bm25_scores")


def mean_pool(hidden, attention_mask):
    """Exercise 6.5: 用平均池化 (mean pooling) 得到句向量，用于文本分类（第 6.1 节）。

    hidden：(B, T, H) 浮点数组，编码器对 B 个填充后序列的输出；
    attention_mask：(B, T) 的 0/1 数组（1：真实词元，0：填充），每行至少有一个 1。
    返回 (B, H)：第 b 行是 hidden[b, t] 在真实词元 t 上的平均。填充不能影响结果。
    """
    raise NotImplementedError("exercise 6.5: mean_pool")
