"""Typed, frozen configs with diffusers' JSON key names.

Every component (the UNet, each scheduler) has one ``@dataclass(frozen=True)`` config that is the single home of
its defaults. :class:`ConfigBase` gives those dataclasses what diffusers' ``FrozenDict`` configs offer users:

* attribute access (``unet.config.sample_size``) and mapping access (``config["sample_size"]``, ``dict(config)``);
* :meth:`ConfigBase.from_dict`, which ignores private keys (``_class_name``, ``_diffusers_version``) and keys this
  component does not use (logged at DEBUG, never warned about), fills missing keys from the dataclass defaults, and
  checks every value against its annotated type;
* :meth:`ConfigBase.to_dict` / :meth:`ConfigBase.save_json`, which write ``_class_name`` so that diffusers opens
  the saved folder too.

What a config carries besides its keys (the file it was read from; a scheduler config's keys of other schedulers)
is held in explicit fields marked :data:`SIDE_STATE`: they are not compared, not printed, not keys of the mapping
and not written to JSON, and ``dataclasses.replace`` keeps them.

Errors name the file (when there is one), the key, the value received and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from .errors import ConfigError
from .io import atomic_write_text, open_regular

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="ConfigBase")

__all__ = [
    "SIDE_STATE",
    "ConfigBase",
    "ConfigError",
    "check",
    "check_keys",
    "config_to_dict",
    "read_json",
    "show_value",
]

#: ``metadata`` of a field that is side state, not a config key: declare it as
#: ``dataclasses.field(default=..., compare=False, repr=False, kw_only=True, metadata=SIDE_STATE)``. Such a field
#: is not compared, not printed, not in the mapping, ``to_dict`` or JSON, never shifts the keys' positions in the
#: constructor, and ``dataclasses.replace`` copies it like any field.
SIDE_STATE: Mapping[str, bool] = types.MappingProxyType({"config_key": False})


def config_to_dict(config: Any) -> dict[str, Any]:
    """Return a plain dict from a ddpm config, a diffusers ``FrozenDict`` config, or any mapping."""
    if isinstance(config, ConfigBase):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    # Objects that carry a config (a scheduler or model passed by mistake) are accepted too.
    inner = getattr(config, "config", None)
    if inner is not None and inner is not config:
        return config_to_dict(inner)
    raise ConfigError(f"expected a config mapping, got {type(config).__name__}: {config!r}")


@dataclasses.dataclass(frozen=True)
class ConfigBase(Mapping[str, Any]):
    """Base of every ddpm config: a frozen dataclass that also reads like a mapping.

    Subclasses set ``_class_name`` (the name written to JSON, e.g. ``"UNet2DModel"``) and ``config_name`` (the JSON
    file name, e.g. ``"config.json"``), declare their keys as annotated fields with defaults, and may override
    :meth:`validate` for checks that span several keys.
    """

    _class_name: ClassVar[str] = ""
    config_name: ClassVar[str] = "config.json"

    #: The file the config was read from, named in error messages (side state, not a key).
    _source_file: str | None = dataclasses.field(
        default=None, compare=False, repr=False, kw_only=True, metadata=SIDE_STATE
    )
    #: Keys that travel with this config without being its own: keys given to ``register_to_config`` and, for a
    #: scheduler, the other schedulers' keys of the file it came from; written back by :meth:`to_dict`.
    _carried: Mapping[str, Any] = dataclasses.field(
        default_factory=dict, compare=False, repr=False, kw_only=True, metadata=SIDE_STATE
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every config compares by its keys (ConfigBase.__eq__): placed in the class before @dataclass runs, it keeps
        # the decorator from writing a field-by-field __eq__ (the decorator still adds the field __hash__).
        cls.__eq__ = ConfigBase.__eq__  # type: ignore[method-assign]

    def __eq__(self, other: object) -> bool:
        """Equal to a config of the same class, or any mapping (a diffusers ``FrozenDict``, ``dict(config)``), with
        the same config keys and values. Entries whose name starts with ``_`` (bookkeeping: ``_class_name``,
        ``_diffusers_version``, ``_use_default_values``) are not compared."""
        if isinstance(other, ConfigBase) and type(other) is not type(self):
            return False
        if not isinstance(other, Mapping):
            return NotImplemented
        public = {k: _as_json(v) for k, v in other.items() if not (isinstance(k, str) and k.startswith("_"))}
        return {k: _as_json(getattr(self, k)) for k in self._field_names()} == public

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, key: str) -> Any:
        if key not in self._field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())

    def extra_keys(self) -> Mapping[str, Any]:
        """Keys that travel with this config without being its own (see ``_carried``)."""
        return self._carried

    @classmethod
    def _key_fields(cls) -> tuple[dataclasses.Field[Any], ...]:
        """The dataclass fields that are config keys (not :data:`SIDE_STATE`)."""
        return tuple(f for f in dataclasses.fields(cls) if f.metadata.get("config_key", True))

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls._key_fields())

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in self._key_fields():
            value = getattr(self, f.name)
            coerced = _check_value(f.name, value, hints[f.name], self._source())
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)  # the frozen dataclass's own way to set a field
        self.validate()

    def _source(self) -> str | None:
        return self._source_file

    def validate(self) -> None:
        """Checks that involve several keys. Raise :class:`ConfigError` naming the keys and values."""

    @classmethod
    def from_dict(cls: type[C], config: Any, *, source: str | os.PathLike[str] | None = None, **overrides: Any) -> C:
        """Build a config from a dict (or another config), ignoring keys this component does not use.

        Args:
            config: A mapping of diffusers JSON keys, a ddpm config, or a diffusers ``FrozenDict``.
            source: The file the mapping came from; named in error messages.
            **overrides: Keys that replace those in ``config``.

        Raises:
            ConfigError: A value has the wrong type or is not allowed; the message names the key and the value.
        """
        data = {**config_to_dict(config), **overrides}
        check_keys(data, source)
        return cls._from_keys(data, source=source)

    @classmethod
    def _from_keys(cls: type[C], data: Mapping[str, Any], *, source: str | os.PathLike[str] | None, **side: Any) -> C:
        """Build from a checked dict: this component's keys are used, the others logged; ``side`` sets side state."""
        names = set(cls._field_names())
        kwargs = {k: v for k, v in data.items() if k in names}
        ignored = sorted(k for k in data if k not in names and not k.startswith("_"))
        if ignored:
            logger.debug("%s ignores config keys it does not use: %s", cls.__name__, ", ".join(ignored))
        try:
            return cls(**kwargs, _source_file=None if source is None else str(source), **side)
        except ConfigError:
            raise
        except TypeError as exc:  # pragma: no cover - dataclass signature mismatch is a programming error
            raise ConfigError(f"{_where(source)}{exc}") from None

    @classmethod
    def from_json_file(cls: type[C], path: str | os.PathLike[str]) -> C:
        """Read a JSON config file; errors name the file."""
        return cls.from_dict(read_json(path), source=path)

    def replace(self: C, **changes: Any) -> C:
        """Return a copy with some keys changed (validated like any new config)."""
        return type(self).from_dict(self.to_dict(), source=self._source(), **changes)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values, with ``_class_name`` first, then the carried keys; tuples become
        lists."""
        out: dict[str, Any] = {"_class_name": self._class_name} if self._class_name else {}
        for name in self._field_names():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return {**out, **self._carried}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_json(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``folder/<config_name>`` atomically and return its path."""
        path = Path(folder) / self.config_name
        atomic_write_text(path, self.to_json_string())
        return path

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._field_names())
        return f"{type(self).__name__}({inner})"


#: The largest ``num_train_timesteps`` a config may hold (real models use 1000 to 4000). Larger values are refused,
#: so that a hostile config cannot make building the noise schedule hang or exhaust memory.
MAX_TRAIN_TIMESTEPS = 100_000

#: The largest JSON file :func:`read_json` reads. Configs are a few KB; ``trained_betas`` for 100,000 timesteps is
#: about 2 MB.
MAX_JSON_BYTES = 16 * 2**20


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object from ``path``, raising :class:`ConfigError` that names the file on any problem.

    The file must be a regular file (a FIFO or a device is refused at once, never waited on) of at most
    :data:`MAX_JSON_BYTES`. A key given twice in one object is refused (which one counts would be a guess), and so is
    an integer too long for Python to parse (over 4300 digits).
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"config file not found: {path}")
    with open_regular(path, what="config file", max_bytes=MAX_JSON_BYTES, error=ConfigError) as f:
        try:
            text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "re-download the file or fix it by hand"
        ) from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: the key {exc.args[0]!r} appears twice in one object; keep one of them") from None
    except ValueError as exc:  # int() refusing more than sys.get_int_max_str_digits() digits
        key = re.search(r'"((?:[^"\\]|\\.){0,200})"\s*:\s*\[?\s*-?\d{1000,}', text)
        where = f"config key {key.group(1)!r} holds" if key else "it holds"
        raise ConfigError(
            f"{path}: {where} an integer too long to read ({_first_line(str(exc)).split(':')[0]}); no config value "
            "needs that many digits: fix the file"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path} nests lists or objects too deeply to be a config file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object (a dict of config keys), found {type(data).__name__}")
    return data


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: a dict, refusing a key given twice."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


# ---------------------------------------------------------------------- type checking of config values


def _where(source: str | os.PathLike[str] | None) -> str:
    return f"{source}: " if source else ""


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        plurals = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        inner = plurals.get(args[0], _describe(args[0])) if args else "values"
        return f"a list of {inner}"
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` where JSON's types allow it, else raise _Mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in get_args(tp)):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        if not math.isfinite(value):
            raise _Mismatch
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp) for v in value)
    raise TypeError(f"unsupported config annotation {tp!r}")  # programming error


def _check_value(key: str, value: Any, tp: Any, source: str | None) -> Any:
    try:
        return _coerce(value, tp)
    except _Mismatch:
        raise ConfigError(
            f"{_where(source)}config key {key!r} has value {show_value(value)}; expected {_describe(tp)}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{_where(source)}config key {key!r} nests lists too deeply") from None


def show_value(value: Any, limit: int = 120) -> str:
    """``repr(value)`` for an error message, shortened to about ``limit`` characters (a hostile file may hold
    megabytes in one value)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 20]}...{text[-12:]} ({len(text)} characters)"


def check_keys(data: Mapping[Any, Any], source: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`ConfigError` unless every key of ``data`` is a string (JSON keys always are)."""
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{_where(source)}config keys must be strings, got {show_value(bad)}")


def check(condition: bool, config: ConfigBase, key: str, allowed: str) -> None:
    """Raise :class:`ConfigError` naming ``key``, its value and ``allowed`` unless ``condition`` holds."""
    if not condition:
        value = getattr(config, key)
        raise ConfigError(f"{_where(config._source())}config key {key!r} has value {show_value(value)}; {allowed}")


def _as_json(value: Any) -> Any:
    """``value`` as JSON holds it: tuples as lists (a config keeps tuples; one read from JSON or diffusers, lists)."""
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value
