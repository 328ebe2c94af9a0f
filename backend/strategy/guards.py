"""Guard expressions: a small, safe language compiled to vectorised numpy code.

A guard reads named values from five namespaces (``pred``, ``feat``, ``pos``, ``portfolio``,
``profile``) and combines them with comparisons, arithmetic, ``and``, ``or`` and ``not``.
Numbers may not appear: thresholds are profile parameters, so an operator can see and
govern them (governance section 5). Guards are evaluated for many symbols at once.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from types import CodeType

import numpy as np

NAMESPACES = ("pred", "feat", "pos", "portfolio", "profile")
STATE_DEPENDENT = frozenset({"pos", "portfolio"})

_COMPARE = {ast.Lt: ast.Lt, ast.LtE: ast.LtE, ast.Gt: ast.Gt, ast.GtE: ast.GtE}
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div)


class GuardSyntaxError(ValueError):
    """A guard is not in the guard language; the message says what was found."""


@dataclass(frozen=True)
class CompiledGuard:
    """A guard ready to evaluate: its text, the names it reads and its compiled code."""

    text: str
    names: tuple[str, ...]
    code: CodeType

    @property
    def is_state_dependent(self) -> bool:
        """Return True when the guard reads position or portfolio state (it cannot be precomputed)."""
        return any(name.split(".")[0] in STATE_DEPENDENT for name in self.names)

    def evaluate(self, env: Mapping[str, object]) -> np.ndarray:
        """Evaluate over ``env`` (``"ns__name"`` -> array or scalar).

        A symbol for which any input the guard reads is missing (NaN) never passes, whatever the
        expression: ``not (pred.p_up >= x)`` must not fire on a missing prediction.
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.asarray(eval(self.code, {"__builtins__": {}}, env), dtype=bool)  # noqa: S307 - compiled from a checked AST
            for name in self.names:
                value = env[env_key(name)]
                if isinstance(value, np.ndarray):
                    result = result & ~np.isnan(value)
                elif np.isnan(value):  # type: ignore[arg-type]
                    return np.zeros_like(result)
        return result


def env_key(name: str) -> str:
    """Return the variable name a dotted guard name is bound to (``pred.p_up`` -> ``pred__p_up``)."""
    return name.replace(".", "__")


class _Rewriter(ast.NodeTransformer):
    def __init__(self, known: frozenset[str]) -> None:
        self.known = known
        self.names: set[str] = set()

    def generic_visit(self, node: ast.AST) -> ast.AST:
        raise GuardSyntaxError(f"{type(node).__name__} is not allowed in a guard")

    def visit_Expression(self, node: ast.Expression) -> ast.AST:
        return ast.Expression(body=self.visit(node.body))

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        op = ast.BitAnd() if isinstance(node.op, ast.And) else ast.BitOr()
        values = [self.visit(v) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = ast.BinOp(left=result, op=op, right=value)
        return result

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if isinstance(node.op, ast.Not):
            return ast.UnaryOp(op=ast.Invert(), operand=self.visit(node.operand))
        if isinstance(node.op, ast.USub):
            return ast.UnaryOp(op=ast.USub(), operand=self.visit(node.operand))
        raise GuardSyntaxError(f"operator {type(node.op).__name__} is not allowed in a guard")

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        if not isinstance(node.op, _ARITH):
            raise GuardSyntaxError(f"operator {type(node.op).__name__} is not allowed in a guard")
        return ast.BinOp(left=self.visit(node.left), op=node.op, right=self.visit(node.right))

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        operands = [self.visit(node.left)] + [self.visit(c) for c in node.comparators]
        parts = []
        for index, op in enumerate(node.ops):
            if type(op) not in _COMPARE:
                raise GuardSyntaxError(f"comparison {type(op).__name__} is not allowed in a guard (use <, <=, >, >=)")
            parts.append(ast.Compare(left=operands[index], ops=[op], comparators=[operands[index + 1]]))
        result = parts[0]
        for part in parts[1:]:
            result = ast.BinOp(left=result, op=ast.BitAnd(), right=part)
        return result

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        raise GuardSyntaxError(
            f"bare value {node.value!r} in a guard: thresholds must be profile parameters (profile.<name>)"
        )

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if not isinstance(node.value, ast.Name) or node.value.id not in NAMESPACES:
            raise GuardSyntaxError(f"names must be <namespace>.<name> with namespace one of {', '.join(NAMESPACES)}")
        name = f"{node.value.id}.{node.attr}"
        if name not in self.known:
            raise GuardSyntaxError(f"unknown name {name!r}")
        self.names.add(name)
        return ast.Name(id=env_key(name), ctx=ast.Load())

    def visit_Name(self, node: ast.Name) -> ast.AST:
        raise GuardSyntaxError(f"bare name {node.id!r}: use <namespace>.<name>")


def compile_guard(text: str, known: frozenset[str]) -> CompiledGuard:
    """Parse and check ``text`` against the ``known`` dotted names, and compile it.

    Raises
    ------
    GuardSyntaxError
        For syntax errors, numbers, unknown names and any construct outside the guard language.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise GuardSyntaxError(f"not a valid expression: {error.msg}") from error
    rewriter = _Rewriter(known)
    rewritten = ast.fix_missing_locations(rewriter.visit(tree))
    code = compile(rewritten, filename="<guard>", mode="eval")
    return CompiledGuard(text=text, names=tuple(sorted(rewriter.names)), code=code)
