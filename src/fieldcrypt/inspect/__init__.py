"""Tools that inspect schemas and topics without being on the record path: schema lint (``lint.py``), topic scan
(``scan.py``), verification of what a deserializer would return (``verify.py``), the topic reader both use
(``topic.py``) and the value detectors (``detectors.py``). The public names are ``fieldcrypt.lint`` and
``fieldcrypt.detectors``."""
