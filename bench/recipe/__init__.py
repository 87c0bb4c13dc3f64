"""The recipe benchmark: medseg default vs the notebook baseline vs nnU-Net v2 on BUSI at 256²."""
