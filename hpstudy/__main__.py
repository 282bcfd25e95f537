import sys

from hpstudy.cli import main

sys.exit(main())
