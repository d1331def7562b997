"""The stub ``_native.pyi`` and the compiled ``pytest_blackbox._native`` name the same things.

The docs of the native module live in its stub (as in pydantic-core and jiter), so a name
added to, renamed in or dropped from ``python-bindings/src/lib.rs`` must be mirrored there:
these tests fail until it is. They compare public names (classes with their methods and
getters, functions, constants) and the parameters of every function and method.
"""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_blackbox import _native

STUB = Path(__file__).resolve().parents[1] / "python-bindings/python/pytest_blackbox/_native.pyi"

#: Declared in the stub before the module has them (none now: every name is checked).
NOT_YET_IN_MODULE: set[str] = set()

Names = dict[str, Any]


def _is_property(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def _params(args: ast.arguments, *, drop_first: bool) -> list[tuple[str, Any]]:
    """(name, default) of each parameter; a default that is not a literal is ``...``."""
    positional = [*args.posonlyargs, *args.args]
    if drop_first:
        positional = positional[1:]
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(args.defaults))
    for d in args.defaults:
        try:
            defaults.append(ast.literal_eval(d))
        except ValueError:
            defaults.append(...)
    out = list(zip([a.arg for a in positional], defaults))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append((a.arg, inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    return out


def stub_names() -> tuple[Names, Names, set[str]]:
    """(classes: name -> {member: ("method", params) | ("getter", None)},
    functions: name -> params, constants) declared by the stub."""
    tree = ast.parse(STUB.read_text(), filename=str(STUB))
    classes: Names = {}
    functions: Names = {}
    constants: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members: dict[str, Any] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    if _is_property(item):
                        members[item.name] = ("getter", None)
                    else:
                        members[item.name] = ("method", _params(item.args, drop_first=True))
            classes[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            functions[node.name] = _params(node.args, drop_first=False)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            constants.add(node.target.id)
        elif isinstance(node, ast.Assign):
            constants.update(t.id for t in node.targets if isinstance(t, ast.Name))
    # Private aliases of the stub (_Role, _PathLike) are not part of the module.
    constants = {c for c in constants if not c.startswith("_") or c == "__version__"}
    return classes, functions, constants


def _signature(obj: Any) -> list[tuple[str, Any]]:
    return [(p.name, p.default) for p in inspect.signature(obj).parameters.values()]


def module_names() -> tuple[Names, Names, set[str]]:
    """The same, read from the compiled module (PyO3 gives every function and method a
    ``__text_signature__``)."""
    classes: Names = {}
    functions: Names = {}
    constants: set[str] = set()
    public = [n for n in dir(_native) if not n.startswith("_")] + ["__version__"]
    for name in public:
        obj = getattr(_native, name)
        if inspect.isclass(obj):
            members: dict[str, Any] = {}
            for attr, value in vars(obj).items():
                descriptor = (types.GetSetDescriptorType, types.MemberDescriptorType)
                if isinstance(value, descriptor) and not attr.startswith("_"):
                    members[attr] = ("getter", None)
                elif attr == "__new__":
                    members[attr] = ("method", _signature(obj))
                elif attr == "__call__":
                    # A slot: its text signature is (*args, **kwargs), whatever it takes.
                    members[attr] = ("method", None)
                elif callable(value) and not attr.startswith("_"):
                    members[attr] = ("method", _signature(value)[1:])  # without self
            classes[name] = members
        elif callable(obj):
            functions[name] = _signature(obj)
        else:
            constants.add(name)
    return classes, functions, constants


def test_stub_parses_and_documents_everything() -> None:
    tree = ast.parse(STUB.read_text())
    assert ast.get_docstring(tree), "the stub starts with the module's docs"
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
            assert ast.get_docstring(node), f"{node.name} has no docstring in the stub"


def test_stub_and_module_name_the_same_classes_functions_and_constants() -> None:
    s_classes, s_functions, s_constants = stub_names()
    m_classes, m_functions, m_constants = module_names()
    missing = NOT_YET_IN_MODULE - set(m_functions)
    for name in missing:
        assert name in s_functions, f"{name} is expected in the stub"
        del s_functions[name]
    assert sorted(s_classes) == sorted(m_classes)
    assert sorted(s_functions) == sorted(m_functions)
    assert s_constants == m_constants


@pytest.mark.parametrize("cls", sorted(module_names()[0]))
def test_stub_class_has_the_methods_and_getters_of_the_module(cls: str) -> None:
    stub = stub_names()[0][cls]
    module = module_names()[0][cls]
    assert {k: v[0] for k, v in stub.items()} == {k: v[0] for k, v in module.items()}
    for name, (kind, params) in module.items():
        if kind == "method" and params is not None:
            assert stub[name][1] == params, f"{cls}.{name}: parameters differ"


def test_stub_functions_have_the_parameters_of_the_module() -> None:
    stub = stub_names()[1]
    for name, params in module_names()[1].items():
        assert stub[name] == params, f"{name}: parameters differ"


def test_constants_have_the_stubbed_types() -> None:
    assert isinstance(_native.__version__, str) and _native.__version__
    assert isinstance(_native.FORMAT_VERSION, int)
