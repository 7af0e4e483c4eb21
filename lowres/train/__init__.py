"""Training: the generic loop, schedules, checkpoints, and the adapt / finetune runs built on them."""
