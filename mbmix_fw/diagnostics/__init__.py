"""Diagnostics of estimators and world models at fixed parameters: gradient statistics, the variance study."""
