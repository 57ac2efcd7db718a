"""Rewards: the sources a recipe names (`sources`: learned reward models and programmatic functions, weighted terms)
and scoring text with a reward model (`scoring`), shared by the reward, ppo and compare stages.
"""
