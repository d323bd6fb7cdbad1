"""The one definition of the chat format shared by training and evaluation.

Training renders ``prompt + completion`` with the tokenizer's own chat template; evaluation renders the same
``prompt`` with ``add_generation_prompt=True``. Both read the instruction, the message builder and the template
keyword arguments from here, so the two can never drift apart.
"""

from __future__ import annotations

from typing import Any

from mathsft.errors import UserError

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


def chat_template_error(tokenizer: Any, err: Exception, what: str) -> UserError:
    """One line for a chat template that cannot render (a jinja ``TemplateSyntaxError``, ``SecurityError``,
    ``UndefinedError``, a ``raise_exception`` in the template, or any other error raised while it runs)."""
    first_line = (str(err).strip().splitlines() or [""])[0][:200]
    source = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    return UserError(f"the chat template of {source} cannot render {what}: {type(err).__name__}: {first_line}; "
                     "fix its chat template (chat_template.jinja or tokenizer_config.json)")  # fmt: skip


def render_chat(tokenizer: Any, messages: list[Message], what: str, **kwargs: Any) -> str:
    """``tokenizer.apply_chat_template`` to text; a template that fails is one line naming ``what`` it rendered."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as err:  # the template is the user's code: any error it raises is a bad template
        raise chat_template_error(tokenizer, err, what) from err


def render_generation_prompt(tokenizer: Any, problem: str, system_prompt: str | None = None) -> str:
    """The text a model sees at evaluation time: the prompt rendered with ``add_generation_prompt=True``."""
    return render_chat(
        tokenizer,
        build_prompt_messages(problem, system_prompt),
        "a prompt",
        add_generation_prompt=True,
        **CHAT_TEMPLATE_KWARGS,
    )


def check_chat_template(tokenizer: Any) -> None:
    """Render one sample prompt, so that a template that cannot render fails before any result is written."""
    render_generation_prompt(tokenizer, "What is $1 + 1$?")
