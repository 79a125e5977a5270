"""Objects named by import path, so that plain-JSON job specs can carry them."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys


class ImportFailed(ValueError):
    """The module named by an import path raised while it was imported."""

    def __init__(self, module: str, err: BaseException):
        where = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
        text = (
            err.msg
            if isinstance(err, SyntaxError)
            else str(err).strip().splitlines()[0]
            if str(err).strip()
            else ""
        )
        super().__init__(f"importing {module} raised {type(err).__name__}{where}: {text}")


def import_object(ref: str, base_dir: str | None = None):
    """Resolves `"package.module:Name"` or `"path/to/file.py:Name"` to the object."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{ref!r} is not an import path; write it as 'package.module:Name'")
    if module_name.endswith(".py"):
        path = (
            module_name
            if os.path.isabs(module_name)
            else os.path.join(base_dir or os.getcwd(), module_name)
        )
        if not os.path.isfile(path):
            raise ValueError(f"{ref!r}: no such file {path}")
        name = "k2e_user_" + os.path.splitext(os.path.basename(path))[0]
        module = sys.modules.get(name)
        if module is None or getattr(module, "__file__", None) != path:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:  # user code: a syntax error, or what it raises
                del sys.modules[name]
                raise ImportFailed(path, err) from None
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"{ref!r}: cannot import {module_name} ({err})") from err
        except Exception as err:
            raise ImportFailed(module_name, err) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{ref!r}: {module_name} has no attribute {attr}") from None
    return obj


def resolve_custom_objects(custom_objects, base_dir: str | None = None):
    """A `custom_objects` dict whose string values (import paths) are imported.

    A list of import paths is accepted too; each object is registered under its own name.
    """
    if not custom_objects:
        return custom_objects
    if isinstance(custom_objects, (list, tuple)):
        custom_objects = {ref.rpartition(":")[2].rpartition(".")[2]: ref for ref in custom_objects}
    return {
        name: import_object(obj, base_dir) if isinstance(obj, str) else obj
        for name, obj in custom_objects.items()
    }


def spec_custom_objects(spec) -> dict:
    """The job spec's `model.custom_objects`, imported; a bad path is the field's error."""
    from k2e_core.errors import SpecError

    try:
        return resolve_custom_objects(spec.model.custom_objects, spec.base_dir)
    except ValueError as err:
        raise SpecError("model.custom_objects", str(err), "fix the import path") from None
