"""``ecgfm-ked finetune``: few-shot fine-tuning of a checkpoint on a folder of labelled records.

    ecgfm-ked finetune --checkpoint CKPT --text-model DIR --data DIR --label-set NAME \\
        --fraction 0.01|0.1|1.0 --out CKPT2 [--epochs 10] [--batch-size 16] [--seed 42] \\
        [--device auto|cpu|cuda] [--truth FILE] [--lr 5e-5] [--database-url URL] [--overwrite]

Labels: a label set by name from the service's database (``ECGFM_DATABASE_URL`` /
``ECGFM_DATA_DIR`` or ``--database-url``), the built-in sets seeded into it as ``serve`` and
``diagnose`` do; truth from the records' ``# Dx:`` SNOMED CT codes or ``--truth`` (a CSV, see
``app.evaluation.truth``). ``--fraction`` accepts any value in (0, 1]; the published few-shot
settings are 0.01, 0.1 and 1.0. Prints a JSON summary on stdout; progress and per-epoch
metrics on stderr. Exit status as every command: 0 done, 1 runtime error (unknown label set,
missing folder, no usable record, ...), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from app.errors import InvalidInput


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], not {value!r}") from None
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (published: 0.01, 0.1, 1.0), not {number}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {number}")
    return number


def _validation_fraction(value: str) -> float:
    number = float(value)
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {number}")
    return number


def add_finetune_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``finetune`` on the CLI's subparsers."""
    f: argparse.ArgumentParser = sub.add_parser(
        "finetune", help="few-shot fine-tune a checkpoint on labelled records (needs the [train] extra)",
        description="Fine-tune the ECG encoder, the TQN and BERT's last layer (+ pooler, mlp_embed) on a folder "
        "of labelled records, and write a checkpoint in the published format that `export` turns into a bundle.")
    f.add_argument("--checkpoint", required=True, help="base checkpoint (.pt, the published format)")
    f.add_argument("--text-model", required=True, help="text model dir (config.json + vocab.txt)")
    f.add_argument("--data", required=True, help="folder of labelled records (WFDB '# Dx:' codes, or --truth)")
    f.add_argument("--label-set", required=True, help="label set name (built-in, e.g. cinc2021, or the site's)")
    f.add_argument("--fraction", type=_fraction, required=True,
                   help="share of the training records used, in (0, 1]; published: 0.01, 0.1, 1.0")
    f.add_argument("--out", required=True, help="the fine-tuned checkpoint to write (+ OUT.history.json)")
    f.add_argument("--epochs", type=_positive_int, default=10)
    f.add_argument("--batch-size", type=_positive_int, default=16)
    f.add_argument("--seed", type=int, default=42)
    f.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    f.add_argument("--truth", help="truth CSV: record,label[,patient] (instead of the headers' '# Dx:' codes)")
    f.add_argument("--lr", type=_positive_float, default=5e-5)
    f.add_argument("--val-fraction", type=_validation_fraction, default=0.2,
                   help="share of the records (whole patients) held out for choosing the epoch (default 0.2)")
    f.add_argument("--contrastive-weight", type=float, default=1.0,
                   help="weight of the ECG<->label-text contrastive term (0: cross-entropy only)")
    f.add_argument("--database-url", help="SQLAlchemy URL of the label database (default: the service's)")
    f.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    f.set_defaults(func=cmd_finetune)
    return f


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def resolve_label_set(name: str, database_url: str | None) -> Any:
    """The label set ``name`` from the service's database, built-in sets seeded as ``serve`` does."""
    from app.knowledge.builtin import seed_builtin
    from app.knowledge.db import create_schema, make_engine
    from app.knowledge.store import KnowledgeStore
    from app.ops.settings import Settings
    from app.service import database_options

    settings = Settings(database_url=database_url) if database_url else Settings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url, database_options(settings))
    try:
        create_schema(engine)
        store = KnowledgeStore(engine)
        seed_builtin(store)
        return store.get_label_set(name)
    finally:
        engine.dispose()


def cmd_finetune(args: argparse.Namespace) -> int:
    from app.training.recipe import Recipe
    from app.training.run import finetune

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InvalidInput(f"{out} exists (use --overwrite to replace it)")
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        raise InvalidInput(f"--data {data_dir}: no such folder")
    for what, path in (("--checkpoint", Path(args.checkpoint)), ("--text-model", Path(args.text_model))):
        if not path.exists():
            raise InvalidInput(f"{what} {path}: does not exist")
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    fraction=args.fraction, val_fraction=args.val_fraction,
                    contrastive_weight=args.contrastive_weight)
    label_set = resolve_label_set(args.label_set, args.database_url)
    started = time.perf_counter()
    summary = finetune(Path(args.checkpoint), Path(args.text_model), data_dir, label_set, recipe, out,
                       truth_csv=Path(args.truth) if args.truth else None, device=args.device, log=_log,
                       progress=None)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0
