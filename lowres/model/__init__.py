"""Backbones, masking, CTC and pretraining heads, LoRA, and their composition (build.py)."""
