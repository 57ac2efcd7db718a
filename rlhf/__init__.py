"""rlhf: SFT -> reward model -> PPO alignment on Accelerate + DeepSpeed, driven by YAML recipes."""

__version__ = "0.1.0"
