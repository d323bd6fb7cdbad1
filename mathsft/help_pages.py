"""The short ``--help`` pages of the entry scripts (``--help_all`` prints every option). Each names only fields of
the script's dataclasses; ``tests/test_cli.py`` checks that, and that each page fits in 60 lines."""

from __future__ import annotations

from mathsft.cli import CommandHelp, Option

SMOKE_RECIPE = "recipes/smoke/adamw.yaml"
GPU_RECIPE = "recipes/qwen3-0.6b-base/adamw.yaml"
CPU_OVERRIDES = "--use_cpu true --bf16 false"
OFFLINE_NOTE = (
    "Offline? Pass local paths, or set HF_HUB_OFFLINE=1; an unreachable Hub is detected within seconds anyway."
)

TRAIN_HELP = CommandHelp(
    usage="python train_sft.py --config RECIPE.yaml [--option value ...]  (or accelerate launch ... train_sft.py ...)",
    description="Fine-tune a causal LM on chat-formatted MATH problems with AdamW, SGD or LoRA (TRL's SFTTrainer).\n"
    "A recipe sets every option; an option on the command line overrides the recipe's value.",
    config="the recipe: recipes/{qwen3-0.6b-base,qwen3-0.6b-base-16gb,smoke}/{adamw,sgd,lora}.yaml",
    sections=(
        ("model and data", (
            Option("model_name_or_path", "ID|DIR", "Hub id (Qwen/Qwen3-0.6B-Base) or a local model folder"),
            Option("dataset_name", "ID|DIR|FILE", "Hub dataset id, a folder holding train.jsonl, or a .jsonl"),
            Option("max_length", "N", "longest example in tokens; longer ones are dropped (overlong)"),
            Option("max_train_samples", "N", "train on the first N examples only (quick runs)"),
            Option("allow_test_overlap", "true|false", "train even on test-set problems (refused by default)"),
        )),
        ("method", (
            Option("optimizer", "adamw|sgd", "optimizer of the trainable weights (LoRA trains with adamw)"),
            Option("use_peft", "true|false", "LoRA adapters instead of full fine-tuning"),
            Option("lora_r", "N", "LoRA rank (with --use_peft true; lora_alpha scales the update)"),
            Option("lora_trainable_tokens", "JSON", "LoRA: tokens whose embedding rows train too ('[]': none)"),
        )),
        ("schedule", (
            Option("learning_rate", "LR", "peak learning rate (the recipes: cosine decay after 3% warm-up)"),
            Option("num_train_epochs", "N", "passes over the training split"),
            Option("max_steps", "N", "stop after N optimizer steps (overrides the epochs)"),
            Option("per_device_train_batch_size", "N", "rows per micro-batch on each device"),
            Option("gradient_accumulation_steps", "N", "micro-batches per optimizer step"),
        )),
        ("output and resume", (
            Option("output_dir", "DIR", "the model, checkpoints, tensorboard/ and run_summary.json"),
            Option("resume_from_checkpoint", "true|DIR", "continue from the latest checkpoint (true) or from DIR"),
            Option("overwrite", "true|false", "start over in an output_dir that holds another run"),
        )),
        ("hardware and logging", (
            Option("use_cpu", "true|false", "train on the CPU, with --bf16 false (the smoke recipes do)"),
            Option("bf16", "true|false", "bf16 autocast on the GPU (fp32 master weights)"),
            Option("report_to", "tensorboard|none", "where the loss curves go besides run_summary.json"),
        )),
    ),  # fmt: skip
    examples=(
        "python train_sft.py --config recipes/smoke/lora.yaml        # tiny model, CPU, offline, about a minute",
        f"accelerate launch --config_file accelerate_configs/single_gpu.yaml train_sft.py --config {GPU_RECIPE}",
        "python train_sft.py --config recipes/qwen3-0.6b-base-16gb/sgd.yaml --learning_rate 1e-2   # a 16 GB GPU",
    ),
    notes=("An unknown option or recipe key is an error that names the closest one.", OFFLINE_NOTE),
)

EVAL_HELP = CommandHelp(
    usage="python run_eval.py --model ID|DIR --output DIR [--option value ...]\n"
    "       python run_eval.py grade --input FILE.jsonl [--output FILE.jsonl]   (re-grade only; grade --help)",
    description="Evaluate a model (or base + LoRA adapter) on MATH-500: generate, grade, summarize.\n"
    "Rerunning the same command resumes; see docs/evaluation.md.",
    config="options from a YAML file (command-line options override it)",
    sections=(
        ("model and data", (
            Option("model", "ID|DIR", "Hub id or local folder of the model (the base, with --adapter)"),
            Option("adapter", "DIR", "a saved LoRA adapter, merged into --model"),
            Option("dataset", "ID|DIR|FILE", "default ricdomolm/MATH-500 (split test); or a local copy"),
            Option("limit", "N", "evaluate only the first N problems"),
        )),
        ("generation", (
            Option("max_new_tokens", "N", "generation budget per answer (default 1024)"),
            Option("num_samples", "N", "answers per problem: pass@k and maj@k (needs --temperature)"),
            Option("temperature", "T", "0 (the default) is greedy decoding"),
            Option("backend", "auto|hf|static|paged", "auto: paged on CUDA, plain generate on the CPU"),
            Option("batch_size", "N", "prompts per batch (paged: concurrent sequences)"),
        )),
        ("output", (
            Option("output", "DIR", "generations.jsonl, summary.json and eval_config.json"),
            Option("overwrite", "true|false", "start over: remove only the evaluation's own files in --output"),
            Option("no_progress", "", "no progress bar"),
        )),
    ),  # fmt: skip
    examples=(
        "python run_eval.py --model Qwen/Qwen3-0.6B-Base --output runs/eval/base",
        "python run_eval.py --model Qwen/Qwen3-0.6B-Base --adapter runs/qwen3-0.6b-base-lora --output runs/eval/lora",
        "python run_eval.py --model assets/smoke/model --dataset assets/smoke/data --output runs/eval/smoke "
        "--max_new_tokens 64",
        "python run_eval.py grade --input runs/eval/base/generations.jsonl  # writes generations.scored.jsonl there",
    ),
    notes=(OFFLINE_NOTE,),
)

GRADE_HELP = CommandHelp(
    usage="python run_eval.py grade --input FILE.jsonl [--output FILE.jsonl]",
    description="Re-grade existing completions (no model): the last \\boxed{} answer against the gold one.\n"
    "Prints a JSON summary as the last line of stdout.",
    config=None,
    sections=(
        ("options", (
            Option("input", "FILE.jsonl", "rows with 'completion' and 'gold' (e.g. a generations.jsonl)"),
            Option("output", "FILE.jsonl", "scored rows (default: <input>.scored.jsonl, beside the input)"),
            Option("grader_timeout", "SECONDS", "time allowed to grade one answer (default 5)"),
            Option("grader_workers", "N", "grading processes (default: the CPU count)"),
        )),
    ),  # fmt: skip
    examples=("python run_eval.py grade --input runs/eval/base/generations.jsonl",),
)

STUDY_HELP = CommandHelp(
    usage="python run_study.py --config studies/NAME.yaml [--option value ...]",
    description="The whole study: train every method at each learning rate of its grid (and seed), evaluate the base\n"
    "model and each method's best run(s) on MATH-500, write the report. Rerunning it skips finished stages.",
    config="the study: studies/{qwen3-0.6b-base,qwen3-0.6b-base-16gb,smoke}.yaml",
    sections=(
        ("what runs", (
            Option("methods", "M [M ...]", "a subset of adamw sgd lora"),
            Option("recipes", "JSON", "train_sft.py recipe per method, e.g. '{\"lora\": \"recipes/x.yaml\"}'"),
            Option("learning_rates", "JSON", "grid per method, e.g. '{\"sgd\": [0.01, 0.02]}'"),
            Option("train_overrides", "JSON", "train_sft.py options for every run, e.g. '{\"max_steps\": 50}'"),
            Option("seeds", "JSON", "training seeds, e.g. '[1, 2]': every learning rate once per seed"),
            Option("evaluation", "JSON", "run_eval.py options, merged key by key, e.g. '{\"limit\": 100}'"),
            Option("eval_checkpoints", "true|false", "also evaluate every checkpoint of the best runs (by step)"),
        )),
        ("where and how", (
            Option("study_dir", "DIR", "train/, eval/ and the stage logs"),
            Option("report_dir", "DIR", "the report (default: <study_dir>/report)"),
            Option("dry_run", "true|false", "print the plan and the commands, run nothing"),
            Option("stream", "true|false", "echo every stage's output (default: one live line per stage)"),
            Option("overwrite", "true|false", "redo stages whose recorded command changed"),
        )),
    ),  # fmt: skip
    examples=(
        "python run_study.py --config studies/smoke.yaml                  # tiny model, CPU, a few minutes",
        "python run_study.py --config studies/qwen3-0.6b-base-16gb.yaml --dry_run true",
        "python run_study.py --config studies/smoke.yaml --seeds '[1, 2]' --eval_checkpoints true",
    ),
    notes=("More (and the protocol: what is tuned, averaged, paired): docs/study.md.",),
)
