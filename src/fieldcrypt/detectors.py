"""Value detectors, public face of :mod:`fieldcrypt.inspect.detectors` (docs/scan.md): the entry-point
group ``fieldcrypt.detectors`` and the :class:`Detector` base third-party detectors implement."""

from fieldcrypt.inspect.detectors import (
    BUILTIN_DETECTORS,
    ENTRY_POINT_GROUP,
    IBAN_LENGTHS,
    Detector,
    available_detectors,
    bsn_ok,
    default_detectors,
    dni_ok,
    get_detector,
    iban_ok,
    load_detector,
    luhn_ok,
    nir_ok,
    register_detector,
    select_detectors,
)

__all__ = [
    "BUILTIN_DETECTORS",
    "ENTRY_POINT_GROUP",
    "IBAN_LENGTHS",
    "Detector",
    "available_detectors",
    "bsn_ok",
    "default_detectors",
    "dni_ok",
    "get_detector",
    "iban_ok",
    "load_detector",
    "luhn_ok",
    "nir_ok",
    "register_detector",
    "select_detectors",
]
