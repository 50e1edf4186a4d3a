"""The extension points' contracts and the vocabulary they speak: env, world model, estimator,
scheduler, component configs, hook specifications, core settings, build context. Imports nothing above it.
"""
