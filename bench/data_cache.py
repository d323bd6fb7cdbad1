"""Data preparation done once for every configuration of a bench run.

Every recipe shares the same data settings, so tokenising (per example, the slow part) once is enough. The cache
wraps ``mathsft.training.prepare_datasets`` and TRL's ``SFTTrainer._prepare_dataset`` (checked first, see
``bench.hooks``); its keys hold every input the preparation reads, so a recipe whose data settings differ is
prepared afresh.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from bench.hooks import require_data_cache_hooks
from mathsft import training

# The SFTConfig fields that TRL's SFTTrainer._prepare_dataset reads.
SFT_DATA_FIELDS = (
    "max_length", "packing_strategy", "seed", "shuffle_dataset", "truncation_mode", "dataset_text_field",
    "assistant_only_loss", "eos_token", "pad_token",
)  # fmt: skip


class DataCache:
    """A context manager: while active, prepared and tokenised datasets are reused across configurations."""

    def __init__(self) -> None:
        self.prepared: dict[str, Any] = {}
        self.tokenized: dict[tuple, Any] = {}
        self.hits = 0
        self._originals: tuple[Any, Any] | None = None

    def _prepare_key(self, data_args: Any, training_args: Any, tokenizer: Any) -> str:
        return json.dumps(
            [asdict(data_args), training_args.max_length, tokenizer.name_or_path], sort_keys=True, default=str
        )

    def _tokenize_key(self, trainer: Any, dataset: Any, processing_class: Any, args: Any, packing: bool,
                      formatting_func: Any, dataset_name: str) -> tuple:  # fmt: skip
        # id(dataset) is stable and unique: the datasets come from the cache above, which keeps them alive.
        return (
            id(dataset), dataset_name, packing, formatting_func is None, trainer.completion_only_loss,
            getattr(trainer, "chat_template", None), getattr(processing_class, "name_or_path", None),
            getattr(processing_class, "eos_token", None),
            json.dumps({f: getattr(args, f, None) for f in SFT_DATA_FIELDS}, sort_keys=True, default=str),
        )  # fmt: skip

    def __enter__(self) -> DataCache:
        from trl import SFTTrainer

        original_prepare, original_tokenize = self._originals = require_data_cache_hooks()
        cache = self

        def prepare_datasets(data_args: Any, training_args: Any, tokenizer: Any) -> Any:
            key = cache._prepare_key(data_args, training_args, tokenizer)
            if key in cache.prepared:
                cache.hits += 1
            else:
                cache.prepared[key] = original_prepare(data_args, training_args, tokenizer)
            return cache.prepared[key]

        def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):  # noqa: ANN001
            key = cache._tokenize_key(self, dataset, processing_class, args, packing, formatting_func, dataset_name)
            if key in cache.tokenized:
                cache.hits += 1
            else:
                cache.tokenized[key] = original_tokenize(
                    self, dataset, processing_class, args, packing, formatting_func, dataset_name
                )
            return cache.tokenized[key]

        training.prepare_datasets = prepare_datasets  # type: ignore[assignment]
        SFTTrainer._prepare_dataset = _prepare_dataset  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from trl import SFTTrainer

        if self._originals is not None:
            training.prepare_datasets, SFTTrainer._prepare_dataset = self._originals  # type: ignore[method-assign]
            self._originals = None


class NoCache:
    """The same interface with nothing cached (``--cache_data false``)."""

    hits = 0

    def __enter__(self) -> NoCache:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
