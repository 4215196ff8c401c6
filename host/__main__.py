import sys

from microfang.cli import main

sys.exit(main())
