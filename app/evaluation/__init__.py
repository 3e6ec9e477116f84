"""Measuring a bundle on a site's labelled records (``ecgfm-ked evaluate``).

One job per module: ``truth`` (which labels each record carries, read without the model),
``split`` (validation / test by patient), ``metrics`` (scikit-learn, bootstrap intervals),
``report_html`` (the self-contained HTML report), ``summary`` (the short ``evaluation.json``
attached to a bundle, read by ``GET /models``), ``command`` (the CLI subcommand). The flow that
ties them to the service's scoring path is ``app.usecases.evaluate``.

``truth`` and ``summary`` import nothing heavy (no scikit-learn, matplotlib or torch): the
serving install and the fine-tuning code import them.
"""
