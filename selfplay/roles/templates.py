"""Prompt templates: YAML files in prompts/ with a system turn, optional worked example turns and a user turn.
The user turn and the example turns are rendered with Jinja2 from the same variables (strict: a missing variable
is an error, not an empty string), so an example can show the format that this run's request asks for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from selfplay.config import ConfigError, resolve_path

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


@dataclass(frozen=True)
class PromptTemplate:
    path: Path
    system: str
    user: jinja2.Template
    examples: tuple[tuple[jinja2.Template, jinja2.Template], ...]

    @classmethod
    def load(cls, path: str) -> PromptTemplate:
        file = resolve_path(path)
        try:
            data = yaml.safe_load(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"prompt template not found: {path}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{file}: not valid YAML: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("user"), str):
            raise ConfigError(f"{file}: needs a 'user' field (a Jinja2 template string)")
        examples = []
        for i, turn in enumerate(data.get("examples") or []):
            if not isinstance(turn, dict) or not {"user", "assistant"} <= set(turn):
                raise ConfigError(f"{file}: examples[{i}] needs 'user' and 'assistant'")
            examples.append((_compile(file, f"examples[{i}].user", turn["user"]),
                             _compile(file, f"examples[{i}].assistant", turn["assistant"])))
        return cls(file, (data.get("system") or "").strip(), _compile(file, "user", data["user"]), tuple(examples))

    def messages(self, **variables) -> list[dict]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.examples:
            messages += [{"role": "user", "content": user.render(**variables).strip()},
                         {"role": "assistant", "content": assistant.render(**variables).strip()}]
        messages.append({"role": "user", "content": self.user.render(**variables).strip()})
        return messages


def _compile(file: Path, name: str, text) -> jinja2.Template:
    try:
        return _ENV.from_string(str(text))
    except jinja2.TemplateSyntaxError as error:
        raise ConfigError(f"{file}: field '{name}': template error line {error.lineno}: {error.message}") from None


def conversation(messages: list[dict]) -> str:
    """The text of every turn of a prompt, the form in which the teacher's echoes of its prompt are looked for."""
    return "\n".join(m["content"] for m in messages)
