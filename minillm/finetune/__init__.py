"""Fine-tuning methods, each a small module that reads like its paper.

* :mod:`.freeze` — freeze the embeddings and the first k blocks, or train the head only;
  layer-wise learning-rate decay (``lr * decay^(L + 1 - depth)``).
* :mod:`.lora` — low-rank adapters ``W + (alpha / r) A B`` (Hu et al. 2021): only A and B
  train; merge/unmerge; adapters saved on their own.
* :mod:`.distill` — knowledge distillation (Hinton et al. 2015): ``alpha T^2 KL`` between
  softened teacher and student distributions plus ``(1 - alpha)`` hard-label cross-entropy.
* :mod:`.quantize` — post-training int8 quantization, symmetric, one scale per output channel.
* :mod:`.prune` — unstructured magnitude pruning with masks applied in forward and backward.
* :mod:`.prompting` — zero/few-shot classification by prompting: a BERT cloze with a
  verbalizer, and GPT in-context examples.
* :mod:`.augment` — EDA text augmentation (Wei & Zou 2019) for English and Chinese.
* :mod:`.instruct` — instruction tuning (SFT): a chat template, the loss on the response
  tokens only, greedy answers with a KV cache, exact match.
"""
from .augment import (EDA, distributional_synonyms, random_deletion, random_insertion,
                      random_swap, split_units, synonym_replacement)
from .distill import DistillationLoss, distill, distillation_loss
from .freeze import (body_layers, freeze, freeze_layers, layer_depths, layerwise_lr_groups,
                     parameter_summary, train_head_only, trainable_parameters, unfreeze)
from .instruct import ChatTemplate, encode_conversation, evaluate_records
from .lora import (LoRALinear, apply_lora, load_adapters, lora_modules, lora_parameter_count,
                   merge_lora, remove_lora, save_adapters, unmerge_lora)
from .prompting import ClozeClassifier, InContextClassifier, select_demonstrations
from .prune import PrunedLinear, magnitude_prune, remove_pruning, sparsity
from .quantize import (QuantizedLinear, dequantize, load_quantized, model_size_bytes,
                       quantize_model, quantize_per_channel, save_quantized)

__all__ = ["EDA", "distributional_synonyms", "random_deletion", "random_insertion", "random_swap",
           "split_units", "synonym_replacement", "DistillationLoss", "distill",
           "distillation_loss", "body_layers", "freeze", "freeze_layers", "layer_depths",
           "layerwise_lr_groups", "parameter_summary", "train_head_only",
           "trainable_parameters", "unfreeze", "ChatTemplate", "encode_conversation",
           "evaluate_records", "LoRALinear", "apply_lora", "load_adapters",
           "lora_modules", "lora_parameter_count", "merge_lora", "remove_lora", "save_adapters",
           "unmerge_lora", "ClozeClassifier", "InContextClassifier", "select_demonstrations",
           "PrunedLinear", "magnitude_prune", "remove_pruning", "sparsity", "QuantizedLinear",
           "dequantize", "load_quantized", "model_size_bytes", "quantize_model",
           "quantize_per_channel", "save_quantized"]
