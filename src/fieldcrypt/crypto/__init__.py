"""The bottom of the house: the byte layout of a field ciphertext (``wire.py``), the one module that encrypts with
data keys (``cipher.py``) and the classification of KEK/KMS failures both it and the KEKs read (``failures.py``).
Imports nothing of fieldcrypt but ``errors``."""
