"""The one definition of the chat format shared by training and evaluation.

Training renders ``prompt + completion`` with the tokenizer's own chat template; evaluation renders the same
``prompt`` with ``add_generation_prompt=True``. Both read the instruction, the message builder and the template
keyword arguments from here, so the two can never drift apart.
"""

from __future__ import annotations

from typing import Any

# Appended to every problem, in training and in evaluation.
INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."

# Qwen3's template inserts an empty <think></think> block when thinking is disabled; the Base model is trained
# and evaluated without thinking, so both sides pass exactly these kwargs.
CHAT_TEMPLATE_KWARGS: dict[str, Any] = {"enable_thinking": False}

# Turns end with <|im_end|>; Qwen3-Base's tokenizer eos is <|endoftext|>. Training makes <|im_end|> the eos
# (so the saved generation config stops on it) and generation stops on both.
END_OF_TURN = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"

Message = dict[str, str]


def user_content(problem: str) -> str:
    """The user turn: the problem followed by the boxed-answer instruction."""
    return problem + INSTRUCTION


def build_prompt_messages(problem: str, system_prompt: str | None = None) -> list[Message]:
    """The prompt side of a conversation: optional system turn, then the user turn."""
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_content(problem)})
    return messages


def build_completion_messages(solution: str) -> list[Message]:
    """The completion side of a conversation: the assistant turn holding the reference solution."""
    return [{"role": "assistant", "content": solution}]


def build_example(problem: str, solution: str, system_prompt: str | None = None) -> dict[str, Any]:
    """A TRL conversational prompt-completion example, with per-example chat template kwargs."""
    return {
        "prompt": build_prompt_messages(problem, system_prompt),
        "completion": build_completion_messages(solution),
        "chat_template_kwargs": dict(CHAT_TEMPLATE_KWARGS),
    }


def render_generation_prompt(tokenizer: Any, problem: str, system_prompt: str | None = None) -> str:
    """The text a model sees at evaluation time: the prompt rendered with ``add_generation_prompt=True``."""
    return tokenizer.apply_chat_template(
        build_prompt_messages(problem, system_prompt),
        tokenize=False,
        add_generation_prompt=True,
        **CHAT_TEMPLATE_KWARGS,
    )
