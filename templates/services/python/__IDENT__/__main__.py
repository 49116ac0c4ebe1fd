import sys

from __IDENT__.app import main

sys.exit(main())
