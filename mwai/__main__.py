import sys

from mwai.cli import main

sys.exit(main())
