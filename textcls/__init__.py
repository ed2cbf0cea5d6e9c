"""Chinese car-news taggers: a gate "新车资讯 vs 其他", then 12 long-tail multi-label sub-tags.

TextCNN and BERT-class models (plain ``nn.Module``s in :mod:`textcls.models`), trained by
:class:`textcls.module.TextClassifier` through ``common.run.train``; fastText and TF-IDF+LR baselines in
:mod:`textcls.baselines`; the embedded synthetic car-news set in :mod:`textcls.synth`.
"""
