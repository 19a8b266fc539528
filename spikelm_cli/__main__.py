"""`python -m spikelm_cli ...`, e.g. `torchrun --nproc-per-node 8 -m spikelm_cli finetune ...`."""

from .launch import main

main()
