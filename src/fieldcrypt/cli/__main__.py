import sys

from fieldcrypt.cli import main

sys.exit(main())
