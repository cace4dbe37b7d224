"""Read a SAM / CloudFormation template into plain Python data.

Short-form intrinsic tags become the long form CloudFormation itself uses, so code that walks the
template sees one shape only:

    !Ref X                 -> {"Ref": "X"}
    !GetAtt Queue.Arn      -> {"Fn::GetAtt": ["Queue", "Arn"]}
    !Sub "${A}-b"          -> {"Fn::Sub": "${A}-b"}
    !If [Cond, a, b]       -> {"Fn::If": ["Cond", "a", "b"]}
    !Condition C           -> {"Condition": "C"}

Unquoted dates (``AWSTemplateFormatVersion: 2010-09-09``) stay strings, as in CloudFormation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["TemplateLoader", "load_template", "parse_template"]

# Tags whose long form has no "Fn::" prefix.
_PLAIN_TAGS = frozenset({"Ref", "Condition"})


class TemplateLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's ``!Tag`` short forms."""


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = suffix if suffix in _PLAIN_TAGS else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if key == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{suffix}", node.start_mark)
    return {key: value}


TemplateLoader.add_multi_constructor("!", _construct_intrinsic)

# CloudFormation reads unquoted timestamps as strings; YAML 1.1 would make them dates.
TemplateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_template(text: str) -> dict[str, Any]:
    """Parse template text (YAML or JSON) into a dict."""
    data = yaml.load(text, Loader=TemplateLoader)  # noqa: S506  (a SafeLoader subclass)
    if not isinstance(data, dict):
        raise ValueError("a template must be a mapping at the top level")
    return data


def load_template(path: Path) -> dict[str, Any]:
    """Read the template at ``path`` (e.g. the repository's ``template.yaml``)."""
    return parse_template(Path(path).read_text(encoding="utf-8"))
