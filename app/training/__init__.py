"""Few-shot fine-tuning of an ECGFM-KED checkpoint on a site's labelled records (``ecgfm-ked finetune``).

Modules, one job each: ``data`` (labelled records -> model windows and targets; patient split,
stratified subsample, fingerprint), ``text`` (the label texts through the partly trainable text
encoder), ``losses``, ``recipe`` (which parameters train, optimizer groups, schedule), ``loop``
(epochs, validation macro AUROC, best epoch), ``output`` (the checkpoint in the published
format), ``command`` (the CLI). Needs the ``[train]`` extra (torch, transformers, scikit-learn);
everything heavy is imported inside functions so ``app.cli`` imports without it.
"""
