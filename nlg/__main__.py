import sys

from nlg.cli import main

sys.exit(main())
