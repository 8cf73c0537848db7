"""`python -m training.demo [--quick]`: the offline end-to-end demo (see training/demo/run.py)."""

import sys

from training.demo.run import main

sys.exit(main())
