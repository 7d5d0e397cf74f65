"""``python -m mmindex.pipeline.cli``."""

from mmindex.pipeline.cli import main

main()
