"""Opening layers: source strings, files, layers, CRS checks, fields, and the data report.

A source is written as QGIS writes a layer's source: `PATH` or `PATH|layername=NAME`, then
`|key=value` options. Everything a reader does not like becomes an InputError that names the
layer, the field and what to do; everything it repairs or drops goes to the `Report`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import InputError

TABLE_SUFFIXES = (".csv", ".txt", ".tsv")


def _read_hint(exc: Exception, otherwise: str) -> str:
    """What to do about a file GDAL could not read: a lock is not a format problem."""
    if "database is locked" in str(exc) or "locked" in str(exc).lower():
        return ("Another program holds a lock on this GeoPackage (an edit session in QGIS or "
                "another process writing to it): save or stop those edits, then run again.")
    return otherwise


def parse_source(source: str) -> tuple[str, str | None, dict[str, str]]:
    """Split `PATH|layername=NAME|key=value...` into (path, layer or None, {key: value}).

    >>> parse_source("city.gpkg|layername=pois|category=type")
    ('city.gpkg', 'pois', {'category': 'type'})
    """
    if not isinstance(source, str) or not source.strip():
        raise InputError("an empty data source was given", hint="Give a file path, e.g. city.gpkg.")
    path, *parts = source.split("|")
    layer = None
    options: dict[str, str] = {}
    for part in parts:
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"cannot read the option {part!r} of the source {source!r}",
                             hint="Write options as |key=value, e.g. |layername=pois.")
        key, value = part.split("=", 1)
        key, value = key.strip(), value.strip()
        if key == "layername":
            layer = value
        elif key == "layerid":
            options["layerid"] = value
        else:
            options[key] = value
    return path.strip(), layer, options


@dataclass
class Report:
    """What the readers repaired, reprojected and dropped; every warning also goes to `log`."""

    log: Callable[[str], None] | None = None  # receives each warning as it happens
    data: dict = field(default_factory=lambda: {"warnings": []})  # becomes dataset.report

    def warn(self, message: str) -> None:
        self.data["warnings"].append(message)
        if self.log is not None:
            self.log(message)

    def count(self, section: str, layer: str, what: str, n: int) -> None:
        """Add n to report[section][layer][what] (e.g. "dropped", "pois", "outside_regions")."""
        entry = self.data.setdefault(section, {}).setdefault(layer, {})
        entry[what] = int(entry.get(what, 0)) + int(n)

    def note(self, section: str, layer: str, value: object) -> None:
        self.data.setdefault(section, {})[layer] = value


def layer_label(path: str | Path, layer: str | None) -> str:
    """How a layer is named in messages: `file.gpkg|layername=x` or `file.shp`."""
    name = Path(path).name
    return f"{name}|layername={layer}" if layer else name


def _check_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("the file does not exist", layer=str(path),
                         hint="Check the path (it is read by the engine, outside QGIS).")
    return p


def list_layers(path: str | Path) -> list[tuple[str, str | None]]:
    """(layer name, geometry type or None for attribute tables) of every layer in a file."""
    import pyogrio

    try:
        return [(str(name), None if gtype in (None, "") else str(gtype))
                for name, gtype in pyogrio.list_layers(_check_file(path))]
    except InputError:
        raise
    except Exception as exc:  # GDAL's own messages, e.g. "not recognized as a supported file format"
        raise InputError(f"cannot open the file: {exc}", layer=str(path),
                         hint=_read_hint(exc, "Use a GeoPackage, Shapefile, GeoJSON or CSV "
                                              "file.")) from exc


def _choose_layer(path: str | Path, layer: str | None, want: tuple[str, ...]) -> str | None:
    """The layer to read: the one named, the only one, or the only one of the wanted geometry."""
    layers = list_layers(path)
    names = [name for name, _ in layers]
    if layer is not None:
        if layer not in names:
            raise InputError(f"the file has no layer named '{layer}'", layer=str(path),
                             hint=f"Available layers: {', '.join(names) or 'none'}.")
        return layer
    if len(layers) <= 1:
        return names[0] if names else None
    matching = [name for name, gtype in layers
                if (gtype is None and "table" in want)
                or (gtype is not None and any(w in gtype.lower() for w in want))]
    if len(matching) == 1:
        return matching[0]
    raise InputError("the file holds several layers and none was named", layer=str(path),
                     hint=f"Write PATH|layername=NAME with one of: {', '.join(names)}.")


def read_vector(path: str | Path, layer: str | None = None,
                want: tuple[str, ...] = ("polygon", "point", "line"),
                columns: list[str] | None = None):
    """A GeoDataFrame (or a plain DataFrame for attribute tables) of one layer, with its label.

    columns: read only these fields (when they all exist; else every field, so that a missing
    one is reported with the list of those available).
    """
    import pyogrio

    _check_file(path)
    if Path(path).suffix.lower() in TABLE_SUFFIXES:
        return read_table(path), layer_label(path, None)
    chosen = _choose_layer(path, layer, want)
    label = layer_label(path, chosen if (layer or len(list_layers(path)) > 1) else None)
    if columns is not None:
        try:
            fields = set(pyogrio.read_info(path, layer=chosen)["fields"].tolist())
        except Exception:
            fields = set()
        if not set(columns) <= fields:
            columns = None
    try:
        frame = pyogrio.read_dataframe(path, layer=chosen, columns=columns)
    except Exception as exc:
        raise InputError(f"cannot read the layer: {exc}", layer=label,
                         hint=_read_hint(exc, "Open it in QGIS to check that it is "
                                              "readable.")) from exc
    return frame, label


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (or tab-separated) table, columns typed by pandas."""
    import csv

    p = _check_file(path)
    sep = "\t" if p.suffix.lower() == ".tsv" else ","
    try:
        with open(p, encoding="utf-8-sig", newline="") as handle:
            header = handle.readline()
        if p.suffix.lower() != ".tsv" and header:
            sep = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except (OSError, UnicodeDecodeError, csv.Error):
        pass  # a one-column file cannot be sniffed: comma
    try:
        return pd.read_csv(p, sep=sep, encoding="utf-8-sig")
    except Exception as exc:
        raise InputError(f"cannot read the table: {exc}", layer=p.name,
                         hint=_read_hint(exc, "Save it as a comma-separated CSV file with a "
                                              "header row.")) from exc


def require_crs(frame, label: str) -> None:
    """A spatial layer must say where it is."""
    if getattr(frame, "crs", None) is None:
        raise InputError("the layer has no coordinate reference system (CRS)", layer=label,
                         hint="Set its CRS in QGIS (Layer Properties > Source) and save it.")


def to_crs(frame, crs, label: str, report: Report, reference_crs=None):
    """Reproject a layer into `crs`; reported when its CRS differs from the region layer's.

    `reference_crs` is the region layer's own CRS (default `crs`): a layer in the same CRS as the
    regions is projected silently along with them.
    """
    require_crs(frame, label)
    reference = crs if reference_crs is None else reference_crs
    if frame.crs != reference:
        report.note("reprojected", label, f"{frame.crs.to_string()} -> {reference.to_string()}")
        report.warn(f"layer '{label}' is in {frame.crs.to_string()}, the region layer in "
                    f"{reference.to_string()}: it was reprojected")
    return frame if frame.crs == crs else frame.to_crs(crs)


def require_field(frame, name: str, label: str, role: str) -> pd.Series:
    """The column `name`, or an InputError listing the available fields."""
    if name not in frame.columns:
        available = [c for c in frame.columns if c != getattr(frame, "_geometry_column_name", "")]
        available = [c for c in available if c != "geometry"]
        raise InputError(f"there is no field '{name}' ({role})", layer=label, field=name,
                         hint=f"Available fields: {', '.join(map(str, available)) or 'none'}.")
    return frame[name]


def numeric_field(frame, name: str, label: str, role: str) -> np.ndarray:
    """A numeric field as float64 with NaN for null; text or all-null fields are errors."""
    column = require_field(frame, name, label, role)
    if pd.api.types.is_bool_dtype(column.dtype):
        column = column.astype("float64")
    if not pd.api.types.is_numeric_dtype(column.dtype):
        converted = pd.to_numeric(column, errors="coerce")
        bad = column.notna() & converted.isna()
        if bad.any():
            example = column[bad].iloc[0]
            raise InputError(f"the field holds text ({example!r}), not numbers ({role})",
                             layer=label, field=name,
                             hint="Choose a numeric field, or convert it with the field "
                             "calculator (to_real).")
        column = converted
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(values).any():
        raise InputError(f"the field has no values, every feature is null ({role})",
                         layer=label, field=name, hint="Choose a field that is filled in.")
    return values


def id_keys(values) -> np.ndarray:
    """Ids as comparable strings: 3, 3.0 and "3" are the same region; text stays text."""
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        out = series.astype(str).to_numpy(dtype=object)
        out[whole] = [str(int(v)) for v in numbers[whole]]
        out[~np.isfinite(numbers)] = None
        return out
    out = series.astype(object).to_numpy()
    keys = np.empty(len(out), dtype=object)
    for i, v in enumerate(out):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            keys[i] = None
        else:
            text = str(v).strip()
            try:  # "3" and "3.0" in a text column match the integer id 3
                number = float(text)
                keys[i] = str(int(number)) if number.is_integer() else text
            except ValueError:
                keys[i] = text
    return keys
