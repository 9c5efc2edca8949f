"""PromQL in tests: the metric names an expression selects (to hold alert rules and
dashboards to the metrics the services export), and promtool's parse of expressions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

PROMTOOL = shutil.which("promtool")
PROMETHEUS_OWN = {"up"}  # series Prometheus writes for every target

# PromQL words that are not metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, label lists of by/on/..., function names, keywords and numbers are
    taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(", " (", text)  # functions, aggregations
    words = re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text)
    return {w for w in words if w.lower() not in KEYWORDS}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def check_expressions(exprs: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    """``promtool check rules`` on a rules file holding each expression as a recording
    rule (named by its key): promtool parses every one and names the rule it cannot."""
    rules = [{"record": name, "expr": expr} for name, expr in exprs.items()]
    path = tmp / "expressions.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}))
    return promtool("check", "rules", str(path), cwd=tmp)
