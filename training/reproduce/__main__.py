"""`python -m training.reproduce --setup imagenet_lt|iwildcam --data_root DIR --out RUNS` (see run.py)."""

import sys

from training.reproduce.run import main

sys.exit(main())
