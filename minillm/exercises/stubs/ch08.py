"""第 8 章练习：高效微调、解码、指令微调、元学习与多模态（chapters/ch08_future.md）。

实现下面每个函数，然后评分：

    minillm exercises check DIR

（卡住时用 ``minillm exercises hint 8.1 --workspace DIR`` 看下一条提示。）每个函数的输入输出
都是 NumPy 数组、Python 数字或它们组成的列表/元组。这里不要调用 minillm：自己写出公式
（评分器会与 minillm.finetune 对照）。
"""
import numpy as np  # noqa: F401 - you will need it


def lora_forward(x, W, b, A, B, alpha):
    """Exercise 8.1: LoRA 线性层的前向计算（第 8.1 节，Hu et al. 2021）。

    x：(..., d_in)；W：(d_in, d_out) 冻结的基础权重（minillm 的布局：y = x W + b）；
    b：(d_out,) 或 None；A：(d_in, r)；B：(r, d_out)；alpha：LoRA 的 alpha（浮点数），
    r = A.shape[1]。低秩增量按 alpha / r 缩放后加到基础输出上。
    返回 y，形状 (..., d_out)。不要构造 (d_in, d_out) 的 A B。
    """
    raise NotImplementedError("exercise 8.1: lora_forward")


def lora_grads(x, W, A, B, alpha, grad_out):
    """Exercise 8.2: LoRA 层中可训练矩阵 A、B 的梯度。

    层的定义同练习 8.1（缩放 s = alpha / r）；grad_out = dL/dy，形状 (..., d_out)。
    返回 (dA, dB)，形状 (d_in, r) 和 (r, d_out)，对 x 的所有前导轴求和。W 是冻结的：不需要 dW。
    """
    raise NotImplementedError("exercise 8.2: lora_grads")


def quantize_int8(w):
    """Exercise 8.3: 对称 int8 量化 (symmetric int8 quantization)，每个输出列一个缩放因子 (scale)。

    w：浮点权重 (d_in, d_out)。每列的 scale 使该列绝对值最大的元素映射到 127；编码 q 四舍五入
    （np.rint：恰好一半时取偶数）并裁剪到 [-127, 127]。全零的列 scale 为 0、编码为 0（不要除以零）。
    返回 (q, scale)：q 为 int8，形状同 w；scale 为浮点 (d_out,)。这样 q * scale 与 w 的误差
    不超过 scale / 2。
    """
    raise NotImplementedError("exercise 8.3: quantize_int8")


def magnitude_prune_masks(weights, sparsity):
    """Exercise 8.4: 全局幅值剪枝 (global magnitude pruning)。

    weights：浮点数组列表（每层一个）；sparsity：要剪掉的比例，在 [0, 1] 内。
    把所有层放在一起，剪掉 |w| 最小的 k = floor(sparsity * n + 0.5) 个（n 为权重总数）；
    幅值相等时按各层展平后拼接的位置先后决定（靠前的先剪）。
    返回 bool 掩码列表，每层一个、形状同该层：True 表示保留。
    """
    raise NotImplementedError("exercise 8.4: magnitude_prune_masks")


def distillation_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """Exercise 8.5: 知识蒸馏 (knowledge distillation) 损失（第 8.1.2 节，Hinton et al. 2015）。

    student_logits、teacher_logits：(N, C)；labels：(N,) 整数，-100 表示忽略该行；
    temperature：温度 T；alpha：蒸馏项的权重。损失是两项的加权和：在温度 T 下教师分布对学生
    分布的 KL 散度（乘以 T^2，权重 alpha），以及温度 1 下学生对标签的交叉熵（权重 1 - alpha），
    两项都对未被忽略的行取平均。
    返回 Python 浮点数。用数值稳定的 log-softmax。
    """
    raise NotImplementedError("exercise 8.5: distillation_loss")


def beam_search(log_probs, start, beam_width, max_len, eos_id):
    """Exercise 8.6: 用二元模型做束搜索 (beam search)。

    log_probs：(V, V)，log_probs[a, b] = log P(下一个 = b | 上一个 = a)；start：给定的第一个
    词（不属于输出）；beam_width：束宽；max_len：最多生成的词数；eos_id：结束词。
    每步把每个存活假设扩展为所有词，按总对数概率（求和，不做长度归一化）保留最好的
    beam_width 个候选；以 eos_id 结尾的候选完成并离开束。生成 max_len 个词或没有存活假设时停止。
    返回 (sequence, score)：在已完成的假设和 max_len 时仍存活的假设中最好的一个；sequence 是
    整数列表（不含 start，若结束则含 eos_id），score 是它的总对数概率（浮点数）。
    beam_width=1 就是贪心解码。
    """
    raise NotImplementedError("exercise 8.6: beam_search")


def response_mask(ids, roles, eos_id):
    """Exercise 8.7: 指令微调 (instruction tuning) 中只在回答上计算损失的掩码 (response-only loss mask)。

    一段对话已按聊天模板 (chat template) 编码成词 id：ids，(n,) 整数数组。roles：(n,) 整数数组，
    roles[i] = 1 表示 ids[i] 是助手回答 (assistant response) 正文里的词，0 表示其余的词（系统、
    用户轮次和“助手：”前缀）；每段回答之后紧跟一个结束词 eos_id（它的 roles 为 0，但它结束
    回答，模型要学会生成它）。返回下一个词预测 (next-token prediction) 的训练对 (x, y)：两个
    (n - 1,) 整数数组，x 是模型读入的词，y[t] 是位置 t 要预测的目标 (target)；目标不属于回答
    （既不是回答正文也不是结束回答的 eos）的位置填 -100（交叉熵忽略它）。
    背景见第 1.3.3 节，对照实现 minillm/finetune/instruct.py（encode_conversation、shift_for_lm）。
    """
    raise NotImplementedError("exercise 8.7: response_mask")


def dpo_loss_and_grads(pc, pr, rc, rr, beta):
    """Exercise 8.8: 直接偏好优化 (DPO, Rafailov et al. 2023) 的损失及其梯度。

    pc、pr：(B,) 策略模型 (policy) 对被选回答 (chosen) 和被拒回答 (rejected) 的序列对数概率
    (sequence log-probability)；rc、rr：(B,) 冻结的参考模型 (reference) 对同样回答的对数概率；
    beta：正数。每对的隐式奖励 (implicit reward) 是 beta 乘以策略与参考对数概率之差；损失是
    chosen 与 rejected 奖励之差的 log-sigmoid 取负，再对批次取平均（Bradley-Terry 偏好模型）。
    返回 (loss, d_pc, d_pr)：loss 为浮点数，d_pc、d_pr 为 (B,) 浮点数组，是 loss 对 pc、pr 的梯度
    （rc、rr 是常数）。用数值稳定的写法。背景见第 1.3.3 节，对照实现 minillm/finetune/dpo.py（dpo_loss）。
    """
    raise NotImplementedError("exercise 8.8: dpo_loss_and_grads")


def group_advantages(rewards):
    """Exercise 8.9: GRPO (Shao et al. 2024) 的组内相对优势 (group-relative advantages)。

    rewards：(P, G) 浮点数组，第 p 行是同一个提示 (prompt) 采样的 G 个回答得到的奖励 (reward)。
    每个回答的优势 (advantage) 是它的奖励相对本组的高低：减去本组均值 (mean)，再除以本组的
    总体标准差 (population std) 加 1e-6。奖励全相等的组优势全为 0。
    返回 (P, G) 浮点数组。背景见第 1.3.3 节，对照实现 minillm/finetune/grpo.py（group_advantages）。
    """
    raise NotImplementedError("exercise 8.9: group_advantages")


def prototypical_loss(support, support_labels, query, query_labels, n_way):
    """Exercise 8.10: 原型网络 (prototypical networks, Snell et al. 2017) 的损失及其梯度（第 8.2.2 节）。

    support：(S, D) 支持集 (support set) 的嵌入，行的顺序是打乱的；support_labels：(S,) 整数，
    取值 0..n_way-1，每类至少一个样本；query：(M, D) 查询集 (query set) 的嵌入；query_labels：(M,)
    整数；n_way：类别数 N。每类的原型 (prototype) 是该类支持嵌入的平均；一个查询属于第 k 类的概率
    是对“负的平方欧氏距离 (negative squared Euclidean distance)”到各原型做 softmax 的结果。
    损失是真实类别的负对数概率对 M 个查询的平均。
    返回 (loss, d_support, d_query)：loss 为浮点数，d_support (S, D)、d_query (M, D) 是 loss
    对 support、query 的梯度。用数值稳定的 log-softmax。对照实现 minillm/meta/protonet.py。
    """
    raise NotImplementedError("exercise 8.10: prototypical_loss")


def patch_embed(images, patch_size, weight, bias):
    """Exercise 8.11: ViT 的块嵌入 (patch embedding，第 8.3.1 节)：把图像切成块，每块线性投影成一个词元。

    images：(B, C, H, W) 浮点数组；patch_size：P，H 和 W 都要能被 P 整除，否则 raise ValueError；
    weight：(C*P*P, D)；bias：(D,)。把每张图切成不重叠的 P x P 块，共 N = (H/P)(W/P) 块，按行优先
    (row-major) 排列：先是最上面一行从左到右的各块，再是下一行。每块的 C*P*P 个数按 (通道, 块内行,
    块内列) 的顺序展平成向量 x（与 PyTorch 的 Conv2d(C, D, P, stride=P) 的权重展平顺序一致），
    再投影成 x @ weight + bias。
    返回 (B, N, D) 浮点数组。不要逐块写 Python 循环。
    """
    raise NotImplementedError("exercise 8.11: patch_embed")
