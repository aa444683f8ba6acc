"""jaxinfra.config_args and every config under configs/: unknown options are errors."""
import importlib
import pathlib

import pytest

from jaxinfra import config_args

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(str(p.relative_to(ROOT).with_suffix("")).replace("/", ".")
                 for p in (ROOT / "configs").rglob("*.py")
                 if p.name != "__init__.py" and "get_config" in p.read_text())


def test_parse_flags_values_choices():
    a = config_args.parse(" Tiny , seed=3,rotate,fb237", flags=("tiny", "cond"),
                          values={"seed": int}, choices={"model": ("rotate", "transe"),
                                                         "data": ("wn18rr", "fb15k-237")},
                          defaults={"data": "wn18rr"}, aliases={"fb237": "fb15k-237"})
    assert a.flags == {"tiny"} and a.values == {"seed": 3}
    assert a.choices == {"model": "rotate", "data": "fb15k-237"}
    b = config_args.parse(None, flags=("tiny",), choices={"data": ("x", "y")},
                          defaults={"data": "x"})
    assert b.flags == frozenset() and b.values == {} and b.choices == {"data": "x"}


@pytest.mark.parametrize("arg,match", [
    ("tyni", r"unknown config option 'tyni'; accepted: tiny, cond, a, b, seed=\.\.\."),
    ("dim=3", r"unknown config option 'dim'="),
    ("seed=x", r"seed='x' is not a valid int"),
    ("a,b", r"'a' and 'b' exclude each other"),
    ("tiny,cond", r"'cond' and 'tiny' exclude each other"),
])
def test_parse_rejects(arg, match):
    with pytest.raises(ValueError, match=match):
        config_args.parse(arg, flags=("tiny", "cond"), values={"seed": int},
                          choices={"letter": ("a", "b")}, exclusive=[("tiny", "cond")])


@pytest.mark.parametrize("module", CONFIGS)
def test_every_config_rejects_a_misspelt_option(module):
    """`:tyni` must never silently run the full job (it did in six configs)."""
    mod = importlib.import_module(module)
    with pytest.raises(ValueError, match="tyni"):
        mod.get_config("tyni")
