"""Grader templates (evals/graders.py): Jinja2, sandboxed and strict, that only fill in fields: `{{ item.team }}`,
`{{ sample.output_text }}`, `{{ sample.output_json.x }}`, constants and filters (`| lower`). Loops, conditions, calls
and arithmetic are refused on the parse tree, before anything compiles a template (compiling folds constants, and
`{{ 9**9**9 }}` would hang the server). A value that is not text is written as JSON."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any


class GraderError(ValueError):
    """A grader that cannot run: `param` names the field (`grader.graders.exact.operation`)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


@lru_cache(maxsize=1)
def _jinja() -> Any:
    from jinja2 import StrictUndefined, Undefined
    from jinja2.sandbox import SandboxedEnvironment

    def finalize(value: Any) -> Any:
        if isinstance(value, Undefined):
            return str(value)  # StrictUndefined raises, naming the missing field
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)

    return SandboxedEnvironment(undefined=StrictUndefined, finalize=finalize, autoescape=False,
                                keep_trailing_newline=True)


@lru_cache(maxsize=512)
def _template(source: str) -> Any:
    return _jinja().from_string(source)


def template_item_fields(source: str) -> set[str]:
    """The item fields a template names (`{{ item.team }}`, `{{ item['team'] }}`): first level only."""
    from jinja2 import nodes

    tree = _jinja().parse(source)
    out: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "item":
            key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(key, str):
                out.add(key)
    return out


def template_names(source: str) -> set[str]:
    """The top-level names a template reads (`item`, `sample`)."""
    from jinja2 import meta

    return set(meta.find_undeclared_variables(_jinja().parse(source)))


MAX_TEMPLATE = 20_000
"""Characters of one template at most."""


def check_template(source: str, param: str) -> None:
    """Templates fill in fields, as OpenAI's do: text, `{{ item.x }}`, `{{ sample.output_json.y }}`, constants and
    filters (`| lower`, `| trim`, `| replace('.', '')`). Loops, conditions, calls and arithmetic are refused, so no
    template can run for long or fill the memory."""
    from jinja2 import TemplateSyntaxError, meta, nodes

    if len(source) > MAX_TEMPLATE:
        raise GraderError(f"{param}: the template is {len(source)} characters long; at most {MAX_TEMPLATE}", param)
    try:
        tree = _jinja().parse(source)
    except TemplateSyntaxError as e:
        raise GraderError(f"{param}: the template does not parse: {e.message} (line {e.lineno})", param) from None
    allowed = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem,
               nodes.Const, nodes.Filter, nodes.Concat, nodes.Keyword)
    for node in tree.find_all(nodes.Node):  # before anything compiles it (compiling folds constants: 'a' * 10**10)
        if not isinstance(node, allowed):
            raise GraderError(f"{param}: templates fill in fields ({{{{ item.field }}}}, {{{{ sample.output_text }}}}, "
                              f"filters such as | lower); a {type(node).__name__.lower()} is not allowed", param)
    names = meta.find_undeclared_variables(tree)
    unknown = sorted(names - {"item", "sample"})
    if unknown:
        raise GraderError(f"{param}: the template names {', '.join(unknown)}; templates may use item.<field> and "
                          "sample.output_text (or sample.output_json)", param)


def render(source: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """The template filled in; GraderError naming the field it lacks."""
    from jinja2 import UndefinedError

    try:
        return _template(source).render(item=item, sample=sample)
    except UndefinedError as e:
        raise GraderError(f"the template {source[:200]!r} names a field the data lacks: {e.message}") from None
    except Exception as e:  # a filter given the wrong kind of value, say: that sample scores 0 with the reason
        raise GraderError(f"the template {source[:200]!r} failed: {type(e).__name__}: {e}") from None


def sample_namespace(output_text: str) -> dict[str, Any]:
    """`sample` as templates and Python graders see it."""
    try:
        output_json = json.loads(output_text)
    except (ValueError, TypeError, RecursionError):
        output_json = None
    return {"output_text": output_text, "output_json": output_json, "output_tools": [],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": output_text}}]}
