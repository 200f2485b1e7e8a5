"""`python -m selfplay` is the `selfplay` command, so launchers that take a module run it:
`accelerate launch --multi_gpu --num_processes 2 -m selfplay run --config ...`."""

import sys

from selfplay.cli import main

sys.exit(main())
