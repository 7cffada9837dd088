"""`tuneloop generate` and `tuneloop chat` with a tiny local model folder."""

from __future__ import annotations

from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.models.generation import GenerationOptions, complete

runner = CliRunner()


def test_generate_streams_the_greedy_answer(tiny_chat_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    expected = complete(model, tokenizer, [{"role": "user", "content": "where is my order"}],
                        GenerationOptions(max_tokens=8)).text
    assert expected
    result = runner.invoke(app, ["generate", str(tiny_chat_model), "-p", "where is my order", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"


def test_sampling_with_a_seed_is_repeatable(tiny_chat_model):
    args = ["generate", str(tiny_chat_model), "-p", "hello", "--max-tokens", "10", "--temperature", "1.5",
            "--seed", "3"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0 and first.stdout == second.stdout


def test_chat_keeps_the_conversation_and_exits(tiny_chat_model):
    result = runner.invoke(app, ["chat", str(tiny_chat_model), "--max-tokens", "4"],
                           input="hello there\n/reset\nsecond question\n/exit\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("model:") == 2 and "conversation cleared" in result.output


def test_an_encoder_cannot_generate(tmp_path):
    result = runner.invoke(app, ["generate", "minilm-l6", "-p", "hi"])
    assert result.exit_code == 2 and "is an encoder" in result.output
