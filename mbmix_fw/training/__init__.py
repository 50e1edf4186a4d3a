"""The training loop and what it writes: trainer, replay buffer, metrics log, checkpoints, progress display,
host-read counting. Imports only the layers below it (maths, contracts).
"""
